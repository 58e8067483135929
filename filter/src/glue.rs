//! proxy-wasm glue: reads from and writes to the host, decides nothing.
//!
//! A panic here traps the worker's VM for every later request, so no SDK helper that unwraps
//! or panics on an unexpected status is used on a request path: host calls go through
//! `proxy_wasm::hostcalls` where those only return errors, and through raw imports
//! ([`host`]) where the SDK would panic. Header values are read as bytes (the String getters
//! unwrap on invalid UTF-8).
//!
//! Decision calls are coalesced per VM ([`crate::batch`]): a batch call is always dispatched
//! from the root context, because the SDK delivers a call's answer to the context that was
//! active at dispatch and silently drops it when that context is gone; the root context
//! outlives every request of the batch. The root is entered for that by a tick (armed only
//! while requests wait and no batch is in flight) or by the answer of the previous batch.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::rc::Rc;
use std::time::UNIX_EPOCH;

use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{
    Action as HostAction, BufferType, ContextType, LogLevel, MapType, MetricType,
};
use rl_wire::{BATCH_DECISION_PATH, DECISION_PATH, DECISION_SECRET_HEADER};

use crate::batch::{self, Coalescer, Route};
use crate::config::PluginConfig;
use crate::evidence::{decision_request, encode_decision_request};
use crate::header_map;
use crate::log_throttle::LogThrottle;
use crate::response::{
    self, Action, CONTROL_PLANE_ERRORS_METRIC, CallBody, CallResult, ControlPlaneError, Decision,
    Headers, MAX_DECISION_RESPONSE_BYTES, METRIC_NAMES,
};

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Warn);
    proxy_wasm::set_root_context(|context_id| -> Box<dyn RootContext> {
        Box::new(Root {
            id: context_id,
            config: None,
            shared: Rc::new(RefCell::new(VmShared {
                root_id: context_id,
                coalescer: Coalescer::default(),
                batches: BTreeMap::new(),
                tick_armed: false,
            })),
        })
    });
}}

/// Seconds between two control-plane error lines from one worker.
const ERROR_LOG_INTERVAL_SECS: u64 = 10;

/// Tick period while requests wait for a batch and nothing else will send them.
const KICK_TICK_MS: u32 = 1;

type MetricIds = [Option<u32>; METRIC_NAMES.len()];

thread_local! {
    // Per VM (one per worker): Envoy keeps metric ids per VM, and the root context may be
    // re-created by a configuration update while the VM lives on.
    static METRICS: Cell<Option<MetricIds>> = const { Cell::new(None) };
    static ERROR_LOG: Cell<LogThrottle> = const { Cell::new(LogThrottle::new(ERROR_LOG_INTERVAL_SECS)) };
}

/// Host calls whose SDK wrappers panic on a status they do not expect (a stream Envoy has
/// already finished answers NotFound or BadArgument; that must not kill the VM).
mod host {
    use proxy_wasm::types::{MapType, Status};

    #[link(wasm_import_module = "env")]
    unsafe extern "C" {
        fn proxy_set_effective_context(context_id: u32) -> Status;
        fn proxy_continue_stream(stream_type: u32) -> Status;
        fn proxy_set_tick_period_milliseconds(period: u32) -> Status;
        fn proxy_send_local_response(
            status_code: u32,
            details_data: *const u8,
            details_size: usize,
            body_data: *const u8,
            body_size: usize,
            headers_data: *const u8,
            headers_size: usize,
            grpc_status: i32,
        ) -> Status;
        fn proxy_get_header_map_pairs(
            map_type: MapType,
            return_map_data: *mut *mut u8,
            return_map_size: *mut usize,
        ) -> Status;
    }

    pub fn set_effective_context(context_id: u32) -> bool {
        // SAFETY: plain value arguments.
        unsafe { proxy_set_effective_context(context_id) == Status::Ok }
    }

    pub fn resume_request() -> bool {
        // SAFETY: plain value arguments (0: the HTTP request stream).
        unsafe { proxy_continue_stream(0) == Status::Ok }
    }

    pub fn set_tick_period_ms(period: u32) -> bool {
        // SAFETY: plain value arguments.
        unsafe { proxy_set_tick_period_milliseconds(period) == Status::Ok }
    }

    pub fn send_local_response(status: u32, headers: &[u8], body: &[u8]) -> bool {
        // SAFETY: the pointers and sizes describe live slices for the duration of the call.
        unsafe {
            proxy_send_local_response(
                status,
                std::ptr::null(),
                0,
                body.as_ptr(),
                body.len(),
                headers.as_ptr(),
                headers.len(),
                -1,
            ) == Status::Ok
        }
    }

    /// Every request header in one host call (one call per header costs several times more).
    pub fn request_header_pairs() -> Option<Vec<u8>> {
        let mut data: *mut u8 = std::ptr::null_mut();
        let mut size: usize = 0;
        // SAFETY: on success the host hands over a buffer of `size` bytes it allocated with
        // this module's `proxy_on_memory_allocate` (the SDK's, a boxed slice of exactly that
        // length), which the SDK's own map getters also take over as a Vec.
        unsafe {
            match proxy_get_header_map_pairs(MapType::HttpRequestHeaders, &mut data, &mut size) {
                Status::Ok if data.is_null() || size == 0 => Some(Vec::new()),
                Status::Ok => Some(Vec::from_raw_parts(data, size, size)),
                _ => None,
            }
        }
    }
}

fn define_metrics() {
    METRICS.with(|metrics| {
        if metrics.get().is_none() {
            metrics.set(Some(METRIC_NAMES.map(|name| {
                hostcalls::define_metric(MetricType::Counter, name).ok()
            })));
        }
    });
}

fn count(index: usize) {
    let id = METRICS.with(|m| m.get().and_then(|ids| ids.get(index).copied().flatten()));
    if let Some(id) = id {
        let _ = hostcalls::increment_metric(id, 1);
    }
}

fn now_secs() -> u64 {
    hostcalls::get_current_time()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_secs())
}

fn log_control_plane_error(error: &ControlPlaneError, config: &PluginConfig) {
    if !log::log_enabled!(log::Level::Warn) {
        return;
    }
    let allowed = ERROR_LOG.with(|cell| {
        let mut throttle = cell.get();
        let allowed = throttle.allow(now_secs());
        cell.set(throttle);
        allowed
    });
    if let Some(suppressed) = allowed {
        let policy = if config.fail_open {
            "requests pass unchecked (fail_open)"
        } else {
            "requests get 503 (fail_open: false)"
        };
        log::warn!(
            "rate-limit-filter: control plane cluster `{}`: {error}; {policy}; {suppressed} similar errors not logged",
            config.cluster
        );
    }
}

enum State {
    Start,
    /// Own decision call in flight (its token).
    Waiting(u32),
    /// In the VM's queue or in a batch call in flight.
    Queued,
    /// Request forwarded; these headers go on the response.
    Forwarded(Headers),
    /// Answered locally.
    Answered,
    /// The stream ended before its decision arrived.
    Gone,
}

type Slot = Rc<RefCell<State>>;

/// A request waiting in the queue or in a batch.
struct Member {
    context_id: u32,
    state: Slot,
}

impl Member {
    fn waiting(&self) -> bool {
        matches!(*self.state.borrow(), State::Queued)
    }
}

/// Per root context (one per VM and plugin configuration): the coalescing state.
struct VmShared {
    root_id: u32,
    coalescer: Coalescer<Member>,
    /// Batch calls in flight, by token.
    batches: BTreeMap<u32, Vec<Member>>,
    tick_armed: bool,
}

type Shared = Rc<RefCell<VmShared>>;

/// Arms the root's tick when queued requests have nobody to send them. `current` is the
/// stream context to make effective again afterwards.
fn kick_if_needed(shared: &Shared, current: Option<u32>) {
    let mut vm = shared.borrow_mut();
    if !vm.coalescer.needs_kick() || vm.tick_armed {
        return;
    }
    // The tick belongs to the root context: set it from there.
    host::set_effective_context(vm.root_id);
    if host::set_tick_period_ms(KICK_TICK_MS) {
        vm.tick_armed = true;
    }
    if let Some(current) = current {
        host::set_effective_context(current);
    }
}

/// Carries out a decision on the effective context. `resume` is set when the request was
/// paused and must be continued explicitly (from a call-response callback or a batch).
fn apply(state: &Slot, config: &PluginConfig, decision: Decision, resume: bool) -> HostAction {
    count(decision.outcome.metric_index());
    if let Some(error) = &decision.error {
        count(CONTROL_PLANE_ERRORS_METRIC);
        log_control_plane_error(error, config);
    }
    match decision.action {
        Action::Resume { response_headers } => {
            *state.borrow_mut() = State::Forwarded(response_headers);
            if resume {
                host::resume_request();
            }
            HostAction::Continue
        }
        Action::Reply(reply) => {
            *state.borrow_mut() = State::Answered;
            let headers: Vec<(&str, &str)> = reply
                .headers
                .iter()
                .map(|(name, value)| (*name, value.as_str()))
                .collect();
            host::send_local_response(reply.status, &header_map::serialize(&headers), &reply.body);
            HostAction::Pause
        }
    }
}

fn call_headers<'a>(config: &'a PluginConfig, path: &'a str) -> Vec<(&'a str, &'a str)> {
    let mut headers = vec![
        (":method", "POST"),
        (":path", path),
        (":authority", config.authority.as_str()),
        ("content-type", "application/json"),
    ];
    if let Some(secret) = &config.decision_secret {
        headers.push((DECISION_SECRET_HEADER, secret.as_str()));
    }
    headers
}

struct Root {
    id: u32,
    config: Option<Rc<PluginConfig>>,
    shared: Shared,
}

impl Root {
    /// Sends every queued request, in batches. Runs on the root context only, so the answers
    /// come back to it whatever happens to the requests meanwhile.
    fn send_queue(&self) {
        let Some(config) = self.config.clone() else {
            return;
        };
        loop {
            let Some(batch) = self
                .shared
                .borrow_mut()
                .coalescer
                .take_batch(Member::waiting)
            else {
                return;
            };
            // Envoy attributes a call to the effective context; after resuming members that
            // is a stream, whose end must not cancel the batch.
            host::set_effective_context(self.id);
            match hostcalls::dispatch_http_call(
                &config.cluster,
                call_headers(&config, BATCH_DECISION_PATH),
                Some(&batch.body),
                vec![],
                config.timeout,
            ) {
                Ok(token) => {
                    self.shared
                        .borrow_mut()
                        .batches
                        .insert(token, batch.members);
                }
                Err(_) => {
                    self.shared.borrow_mut().coalescer.batch_done();
                    let decisions = batch::decide(
                        CallResult::DispatchFailed,
                        batch.members.len(),
                        config.fail_open,
                    );
                    finish_members(&config, batch.members, decisions);
                }
            }
        }
    }
}

/// Resumes or answers every member still waiting, each on its own context.
fn finish_members(config: &PluginConfig, members: Vec<Member>, decisions: Vec<Decision>) {
    for (member, decision) in members.into_iter().zip(decisions) {
        if member.waiting() && host::set_effective_context(member.context_id) {
            apply(&member.state, config, decision, true);
        }
    }
}

/// Reads the answer the host is delivering (`:status` and a body of at most `max_body`
/// bytes) and hands it to `decide`.
fn read_call_answer<T>(
    num_headers: usize,
    body_size: usize,
    max_body: usize,
    decide: impl FnOnce(CallResult<'_>) -> T,
) -> T {
    // With no headers the host has no header map: asking for `:status` would make the SDK
    // panic, so a reset is recognised before anything is read.
    if num_headers == 0 {
        return decide(CallResult::Reset);
    }
    let status = hostcalls::get_map_value_bytes(MapType::HttpCallResponseHeaders, ":status")
        .ok()
        .flatten();
    let body = if CallBody::should_read_within(body_size, max_body) {
        hostcalls::get_buffer(BufferType::HttpCallResponseBody, 0, body_size)
            .ok()
            .flatten()
    } else {
        None
    };
    decide(CallResult::Response {
        status: status.as_deref(),
        body: CallBody::from_read_within(body_size, max_body, body.as_deref()),
    })
}

impl Context for Root {
    fn on_http_call_response(
        &mut self,
        token_id: u32,
        num_headers: usize,
        body_size: usize,
        _num_trailers: usize,
    ) {
        let members = {
            let mut vm = self.shared.borrow_mut();
            let Some(members) = vm.batches.remove(&token_id) else {
                return;
            };
            vm.coalescer.batch_done();
            members
        };
        let Some(config) = self.config.clone() else {
            return;
        };
        // The answer is read while the root is the effective context, before any member's.
        let decisions = read_call_answer(
            num_headers,
            body_size,
            batch::MAX_BATCH_RESPONSE_BYTES,
            |answer| batch::decide(answer, members.len(), config.fail_open),
        );
        finish_members(&config, members, decisions);
        self.send_queue();
        kick_if_needed(&self.shared, None);
    }
}

impl RootContext for Root {
    fn on_configure(&mut self, _plugin_configuration_size: usize) -> bool {
        let raw = match hostcalls::get_buffer(BufferType::PluginConfiguration, 0, usize::MAX) {
            Ok(raw) => raw.unwrap_or_default(),
            Err(status) => {
                log::error!("rate-limit-filter: cannot read the plugin configuration: {status:?}");
                return false;
            }
        };
        match PluginConfig::from_json(&raw) {
            Ok(config) => {
                define_metrics();
                self.config = Some(Rc::new(config));
                true
            }
            Err(err) => {
                log::error!("rate-limit-filter: invalid plugin configuration: {err}");
                false
            }
        }
    }

    fn on_tick(&mut self) {
        if host::set_tick_period_ms(0) {
            self.shared.borrow_mut().tick_armed = false;
        }
        self.send_queue();
    }

    fn create_http_context(&self, context_id: u32) -> Option<Box<dyn HttpContext>> {
        // Returning None would make the SDK panic; a context without a config passes traffic
        // (Envoy does not start a plugin whose on_configure failed, so this is theoretical).
        Some(Box::new(RequestFilter {
            context_id,
            config: self.config.clone(),
            state: Rc::new(RefCell::new(State::Start)),
            shared: self.shared.clone(),
        }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

struct RequestFilter {
    context_id: u32,
    config: Option<Rc<PluginConfig>>,
    state: Slot,
    shared: Shared,
}

fn request_header(name: &str) -> Option<Vec<u8>> {
    hostcalls::get_map_value_bytes(MapType::HttpRequestHeaders, name)
        .ok()
        .flatten()
}

impl RequestFilter {
    fn decision_body(config: &PluginConfig) -> Vec<u8> {
        let source = hostcalls::get_property(vec!["source", "address"])
            .ok()
            .flatten();
        let all = host::request_header_pairs();
        let fetched: Vec<(&str, Vec<u8>)>;
        let pairs = match all.as_deref().and_then(header_map::parse) {
            Some(pairs) => pairs,
            None => {
                // The host refused the whole map: the headers that matter, one call each.
                fetched = header_map::EVIDENCE_HEADERS
                    .into_iter()
                    .chain([config.api_key_header.as_str()])
                    .filter_map(|name| request_header(name).map(|value| (name, value)))
                    .collect();
                fetched
                    .iter()
                    .map(|(name, value)| (name.as_bytes(), value.as_slice()))
                    .collect()
            }
        };
        let raw = header_map::raw_request(&pairs, &config.api_key_header, source.as_deref());
        encode_decision_request(decision_request(&raw, &config.trusted_proxies))
    }

    fn paused(&self) -> bool {
        matches!(
            *self.state.borrow(),
            State::Waiting(_) | State::Queued | State::Answered
        )
    }
}

impl Context for RequestFilter {
    fn on_http_call_response(
        &mut self,
        token_id: u32,
        num_headers: usize,
        body_size: usize,
        _num_trailers: usize,
    ) {
        if !matches!(*self.state.borrow(), State::Waiting(token) if token == token_id) {
            return;
        }
        self.shared.borrow_mut().coalescer.single_done();
        let Some(config) = self.config.clone() else {
            return;
        };
        let decision = read_call_answer(
            num_headers,
            body_size,
            MAX_DECISION_RESPONSE_BYTES,
            |answer| response::decide(answer, config.fail_open),
        );
        apply(&self.state, &config, decision, true);
    }

    fn on_done(&mut self) -> bool {
        let mut state = self.state.borrow_mut();
        match *state {
            State::Waiting(_) => {
                // Its answer will not be delivered to a finished stream.
                self.shared.borrow_mut().coalescer.single_done();
                *state = State::Gone;
            }
            State::Queued => *state = State::Gone,
            _ => {}
        }
        true
    }
}

impl HttpContext for RequestFilter {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> HostAction {
        let Some(config) = self.config.clone() else {
            return HostAction::Continue;
        };
        if !matches!(*self.state.borrow(), State::Start) {
            return HostAction::Continue;
        }
        let body = Self::decision_body(&config);
        let route = self.shared.borrow_mut().coalescer.route();
        if route == Route::Queue {
            *self.state.borrow_mut() = State::Queued;
            let member = Member {
                context_id: self.context_id,
                state: self.state.clone(),
            };
            self.shared.borrow_mut().coalescer.push(member, body);
            kick_if_needed(&self.shared, Some(self.context_id));
            return HostAction::Pause;
        }
        match hostcalls::dispatch_http_call(
            &config.cluster,
            call_headers(&config, DECISION_PATH),
            Some(&body),
            vec![],
            config.timeout,
        ) {
            Ok(token) => {
                *self.state.borrow_mut() = State::Waiting(token);
                HostAction::Pause
            }
            Err(_) => {
                self.shared.borrow_mut().coalescer.single_done();
                let decision = response::decide(CallResult::DispatchFailed, config.fail_open);
                apply(&self.state, &config, decision, false)
            }
        }
    }

    fn on_http_request_body(&mut self, _body_size: usize, _end_of_stream: bool) -> HostAction {
        // Continue here would let Envoy forward the paused headers before the decision.
        if self.paused() {
            HostAction::Pause
        } else {
            HostAction::Continue
        }
    }

    fn on_http_request_trailers(&mut self, _num_trailers: usize) -> HostAction {
        if self.paused() {
            HostAction::Pause
        } else {
            HostAction::Continue
        }
    }

    fn on_http_response_headers(
        &mut self,
        _num_headers: usize,
        _end_of_stream: bool,
    ) -> HostAction {
        if let State::Forwarded(headers) = &*self.state.borrow() {
            for (name, value) in headers {
                let _ = hostcalls::set_map_value_bytes(
                    MapType::HttpResponseHeaders,
                    name,
                    Some(value.as_bytes()),
                );
            }
        }
        HostAction::Continue
    }
}
