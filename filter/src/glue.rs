//! proxy-wasm glue: reads from and writes to the host, decides nothing. Every callback hands
//! its event to the plugin's [`Engine`] and carries out the [`Effect`]s it returns.
//!
//! A panic here traps the worker's VM for every later request, so no SDK helper that unwraps
//! or panics on an unexpected status is used on a request path: host calls go through
//! `proxy_wasm::hostcalls` where those only return errors, and through raw imports
//! ([`host`]) where the SDK would panic. Header values are read as bytes (the String getters
//! unwrap on invalid UTF-8).
//!
//! A call is dispatched with the context the engine names effective: Envoy attributes the call
//! to the effective context (and cancels it when that stream ends), while the SDK delivers the
//! answer to the context whose callback is running. The engine emits a batch call only while
//! a root callback runs (the tick, a batch's answer) and names the root, so both are the root,
//! which outlives every request of the batch.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::rc::Rc;
use std::time::UNIX_EPOCH;

use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{
    Action as HostAction, BufferType, ContextType, LogLevel, MapType, MetricType,
};

use crate::config::PluginConfig;
use crate::deny_cache::CacheHost;
use crate::engine::{self, Call, Effect, Engine, Flow};
use crate::evidence::{decision_request, encode_decision_request};
use crate::header_map;
use crate::log_throttle::LogThrottle;
use crate::response::{
    CallBody, CallResult, ControlPlaneError, LocalReply, METRIC_NAMES, RATE_LIMIT_HEADERS,
};
use crate::upstream_headers;
use crate::usage;

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Warn);
    proxy_wasm::set_root_context(|context_id| -> Box<dyn RootContext> {
        Box::new(Root {
            id: context_id,
            engine: Rc::new(RefCell::new(Engine::with_cache(context_id, Box::new(SharedData)))),
        })
    });
}}

/// Seconds between two control-plane error lines from one worker.
const ERROR_LOG_INTERVAL_SECS: u64 = 10;

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
        fn proxy_add_header_map_value(
            map_type: MapType,
            key_data: *const u8,
            key_size: usize,
            value_data: *const u8,
            value_size: usize,
        ) -> Status;
        fn proxy_replace_header_map_value(
            map_type: MapType,
            key_data: *const u8,
            key_size: usize,
            value_data: *const u8,
            value_size: usize,
        ) -> Status;
        fn proxy_remove_header_map_value(
            map_type: MapType,
            key_data: *const u8,
            key_size: usize,
        ) -> Status;
        fn proxy_get_shared_data(
            key_data: *const u8,
            key_size: usize,
            return_value_data: *mut *mut u8,
            return_value_size: *mut usize,
            return_cas: *mut u32,
        ) -> Status;
        fn proxy_set_shared_data(
            key_data: *const u8,
            key_size: usize,
            value_data: *const u8,
            value_size: usize,
            cas: u32,
        ) -> Status;
    }

    // The same signatures std's own WASI bindings use.
    #[link(wasm_import_module = "wasi_snapshot_preview1")]
    unsafe extern "C" {
        fn clock_time_get(id: i32, precision: i64, time: i32) -> i32;
        fn random_get(buf: i32, len: i32) -> i32;
    }

    /// WASI's monotonic clock (Envoy's steady clock, the same for every worker), in ns.
    /// (std's `Instant` would panic if the host refused.)
    pub fn monotonic_ns() -> Option<u64> {
        const CLOCK_MONOTONIC: i32 = 1;
        let mut time: u64 = 0;
        // SAFETY: the host writes 8 bytes at the address of a live u64 (wasm32 addresses fit
        // an i32).
        let errno = unsafe { clock_time_get(CLOCK_MONOTONIC, 1, &mut time as *mut u64 as i32) };
        (errno == 0).then_some(time)
    }

    /// Fills `buf` from the host's randomness.
    pub fn random(buf: &mut [u8]) -> bool {
        let Ok(len) = i32::try_from(buf.len()) else {
            return false;
        };
        // SAFETY: the host writes `len` bytes into the live slice.
        unsafe { random_get(buf.as_mut_ptr() as i32, len) == 0 }
    }

    /// A shared-data value and its CAS token; `None` when absent or refused.
    pub fn get_shared_data(key: &str) -> Option<(Vec<u8>, Option<u32>)> {
        let mut data: *mut u8 = std::ptr::null_mut();
        let mut size: usize = 0;
        let mut cas: u32 = 0;
        // SAFETY: as in `header_pairs`: on success the host hands over a buffer of `size`
        // bytes allocated with this module's allocator.
        unsafe {
            match proxy_get_shared_data(key.as_ptr(), key.len(), &mut data, &mut size, &mut cas) {
                Status::Ok if data.is_null() || size == 0 => None,
                Status::Ok => Some((
                    Vec::from_raw_parts(data, size, size),
                    (cas != 0).then_some(cas),
                )),
                _ => None,
            }
        }
    }

    /// Writes a shared-data value if its CAS token is still `cas` (0: unconditionally).
    pub fn set_shared_data(key: &str, value: &[u8], cas: u32) -> bool {
        // SAFETY: the pointers and sizes describe live slices for the duration of the call.
        unsafe {
            proxy_set_shared_data(key.as_ptr(), key.len(), value.as_ptr(), value.len(), cas)
                == Status::Ok
        }
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

    /// Every header of `map` in one host call (one call per header costs several times more).
    pub fn header_pairs(map: MapType) -> Option<Vec<u8>> {
        let mut data: *mut u8 = std::ptr::null_mut();
        let mut size: usize = 0;
        // SAFETY: on success the host hands over a buffer of `size` bytes it allocated with
        // this module's `proxy_on_memory_allocate` (the SDK's, a boxed slice of exactly that
        // length), which the SDK's own map getters also take over as a Vec.
        unsafe {
            match proxy_get_header_map_pairs(map, &mut data, &mut size) {
                Status::Ok if data.is_null() || size == 0 => Some(Vec::new()),
                Status::Ok => Some(Vec::from_raw_parts(data, size, size)),
                _ => None,
            }
        }
    }

    /// Sets a response header, replacing every line of that name.
    pub fn replace_response_header(name: &[u8], value: &[u8]) -> bool {
        // SAFETY: the pointers and sizes describe live slices for the duration of the call.
        unsafe {
            proxy_replace_header_map_value(
                MapType::HttpResponseHeaders,
                name.as_ptr(),
                name.len(),
                value.as_ptr(),
                value.len(),
            ) == Status::Ok
        }
    }

    /// Adds a response header line, after any lines of that name.
    pub fn add_response_header(name: &[u8], value: &[u8]) -> bool {
        // SAFETY: the pointers and sizes describe live slices for the duration of the call.
        unsafe {
            proxy_add_header_map_value(
                MapType::HttpResponseHeaders,
                name.as_ptr(),
                name.len(),
                value.as_ptr(),
                value.len(),
            ) == Status::Ok
        }
    }

    /// Removes every line of a response header.
    pub fn remove_response_header(name: &[u8]) -> bool {
        // SAFETY: the pointer and size describe a live slice for the duration of the call.
        unsafe {
            proxy_remove_header_map_value(MapType::HttpResponseHeaders, name.as_ptr(), name.len())
                == Status::Ok
        }
    }
}

/// The deny cache's host: Envoy's shared data (every worker's) and monotonic clock.
struct SharedData;

impl CacheHost for SharedData {
    fn now_ns(&mut self) -> Option<u64> {
        host::monotonic_ns()
    }

    fn get(&mut self, key: &str) -> Option<(Vec<u8>, Option<u32>)> {
        host::get_shared_data(key)
    }

    fn set(&mut self, key: &str, value: &[u8], cas: Option<u32>) -> bool {
        host::set_shared_data(key, value, cas.unwrap_or(0))
    }

    fn random(&mut self, buf: &mut [u8]) -> bool {
        host::random(buf)
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

/// Adds what `counts` holds to the counters, one host call per counter that moved (a
/// batch's answer counts all its members in one).
fn count(counts: &[i64; METRIC_NAMES.len()]) {
    let Some(ids) = METRICS.with(Cell::get) else {
        return;
    };
    for (id, &n) in ids.iter().zip(counts) {
        if let (Some(id), true) = (id, n > 0) {
            let _ = hostcalls::increment_metric(*id, n);
        }
    }
}

/// Host time, Unix ms (0 if the host has none: deadlines then count from 0, consistently).
fn now_ms() -> u64 {
    hostcalls::get_current_time()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn log_control_plane_error(error: &ControlPlaneError, config: &PluginConfig) {
    if !log::log_enabled!(log::Level::Warn) {
        return;
    }
    let allowed = ERROR_LOG.with(|cell| {
        let mut throttle = cell.get();
        let allowed = throttle.allow(now_ms() / 1000);
        cell.set(throttle);
        allowed
    });
    if let Some(suppressed) = allowed {
        log::warn!("{}", engine::error_log_line(config, error, suppressed));
    }
}

type Shared = Rc<RefCell<Engine>>;

/// Makes `context` effective unless it already is (`effective`). False: the host no longer
/// knows it (the stream ended).
fn enter(effective: &mut u32, context: u32) -> bool {
    if *effective == context {
        return true;
    }
    let entered = host::set_effective_context(context);
    if entered {
        *effective = context;
    }
    entered
}

/// Carries out `effects` in a callback entered on context `origin`, feeding back what the
/// host answers, and leaves `origin` effective again.
fn perform(engine: &Shared, origin: u32, effects: Vec<Effect>) {
    if effects.is_empty() {
        return;
    }
    let config = engine.borrow().config();
    let root = engine.borrow().root();
    let mut effective = origin;
    let mut counts = [0i64; METRIC_NAMES.len()];
    let mut todo = VecDeque::from(effects);
    while let Some(effect) = todo.pop_front() {
        match effect {
            Effect::Count(index) => {
                if let Some(n) = counts.get_mut(index) {
                    *n += 1;
                }
            }
            Effect::LogError(error) => {
                if let Some(config) = &config {
                    log_control_plane_error(&error, config);
                }
            }
            Effect::SetTick(period) => {
                if enter(&mut effective, root) && host::set_tick_period_ms(period) {
                    engine.borrow_mut().tick_set(period);
                }
            }
            Effect::Resume(context) => {
                if enter(&mut effective, context) {
                    host::resume_request();
                }
            }
            Effect::Reply(context, reply) => {
                if enter(&mut effective, context) {
                    send_reply(&reply);
                }
            }
            Effect::Warn(line) => log::warn!("{line}"),
            Effect::Dispatch(call) => {
                let token = config
                    .as_deref()
                    .and_then(|config| dispatch(config, &call, &mut effective));
                let results = engine.borrow_mut().dispatched(token);
                for effect in results.into_iter().rev() {
                    todo.push_front(effect);
                }
            }
        }
    }
    count(&counts);
    if effective != origin {
        host::set_effective_context(origin);
    }
}

fn dispatch(config: &PluginConfig, call: &Call, effective: &mut u32) -> Option<u32> {
    if !enter(effective, call.context) {
        return None;
    }
    hostcalls::dispatch_http_call(
        &config.cluster,
        engine::call_headers(config, call.path),
        Some(&call.body),
        vec![],
        call.timeout(config, now_ms),
    )
    .ok()
}

fn send_reply(reply: &LocalReply) {
    let headers: Vec<(&str, &str)> = reply
        .headers
        .iter()
        .map(|(name, value)| (*name, value.as_str()))
        .collect();
    host::send_local_response(reply.status, &header_map::serialize(&headers), &reply.body);
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

/// A call's answer, delivered by the SDK to the callback of context `origin` (the one that
/// dispatched it).
fn call_response(engine: &Shared, origin: u32, token: u32, num_headers: usize, body_size: usize) {
    let Some(max_body) = engine.borrow().answer_limit(token) else {
        return;
    };
    // Read while `origin` is effective, before any effect enters another context.
    let effects = read_call_answer(num_headers, body_size, max_body, |answer| {
        engine.borrow_mut().on_call_response(token, answer)
    });
    perform(engine, origin, effects);
}

fn flow(flow: Flow) -> HostAction {
    match flow {
        Flow::Continue => HostAction::Continue,
        Flow::Pause => HostAction::Pause,
    }
}

struct Root {
    id: u32,
    engine: Shared,
}

impl Context for Root {
    fn on_http_call_response(
        &mut self,
        token_id: u32,
        num_headers: usize,
        body_size: usize,
        _num_trailers: usize,
    ) {
        call_response(&self.engine, self.id, token_id, num_headers, body_size);
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
                if config.benchmark_no_callout {
                    log::warn!(
                        "rate-limit-filter: benchmark_no_callout is on: every request is \
                         forwarded unchecked with fixed headers (a benchmarking aid, never for \
                         production)"
                    );
                }
                define_metrics();
                let mut engine = self.engine.borrow_mut();
                engine.set_cache_scope(&raw);
                engine.configure(config);
                true
            }
            Err(err) => {
                log::error!("rate-limit-filter: invalid plugin configuration: {err}");
                false
            }
        }
    }

    fn on_tick(&mut self) {
        let effects = self.engine.borrow_mut().on_tick(now_ms());
        perform(&self.engine, self.id, effects);
    }

    fn create_http_context(&self, context_id: u32) -> Option<Box<dyn HttpContext>> {
        // Returning None would make the SDK panic; without a configuration the engine lets
        // traffic pass (Envoy does not start a plugin whose on_configure failed, so this is
        // theoretical).
        Some(Box::new(RequestFilter {
            context_id,
            engine: self.engine.clone(),
        }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

struct RequestFilter {
    context_id: u32,
    engine: Shared,
}

fn request_header(name: &str) -> Option<Vec<u8>> {
    hostcalls::get_map_value_bytes(MapType::HttpRequestHeaders, name)
        .ok()
        .flatten()
}

impl RequestFilter {
    fn flow(&self) -> HostAction {
        flow(self.engine.borrow().request_flow(self.context_id))
    }

    /// Reads the response's status (headers) and the charge header or trailer of a request
    /// this plugin forwarded with host calls of their own (trailers, or a header map the host
    /// refused), and reports them.
    fn take_usage(&self, map: MapType) {
        let Some(config) = self.engine.borrow().config() else {
            return;
        };
        if self
            .engine
            .borrow()
            .response_headers(self.context_id)
            .is_none()
        {
            return;
        }
        let status = if matches!(map, MapType::HttpResponseHeaders) {
            hostcalls::get_map_value_bytes(map, ":status")
                .ok()
                .flatten()
                .and_then(|s| std::str::from_utf8(&s).ok()?.parse::<u16>().ok())
        } else {
            None
        };
        let charge = hostcalls::get_map_value_bytes(map, &config.charge_header)
            .ok()
            .flatten();
        self.report_usage(map, &config.charge_header, status, charge.as_deref());
    }

    /// Hands the response's status and charge to the engine, and removes the charge before
    /// the client sees it.
    fn report_usage(
        &self,
        map: MapType,
        charge_header: &str,
        status: Option<u16>,
        charge: Option<&[u8]>,
    ) {
        if let Some(status) = status {
            self.engine
                .borrow_mut()
                .on_response_status(self.context_id, status);
        }
        let Some(charge) = charge else {
            return;
        };
        let _ = hostcalls::set_map_value_bytes(map, charge_header, None);
        let effects = self.engine.borrow_mut().on_charge(self.context_id, charge);
        perform(&self.engine, self.context_id, effects);
    }
}

/// The decision call's body for the request whose callback is running.
fn decision_body(config: &PluginConfig) -> Vec<u8> {
    let source = hostcalls::get_property(vec!["source", "address"])
        .ok()
        .flatten();
    let all = host::header_pairs(MapType::HttpRequestHeaders);
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

impl Context for RequestFilter {
    fn on_http_call_response(
        &mut self,
        token_id: u32,
        num_headers: usize,
        body_size: usize,
        _num_trailers: usize,
    ) {
        call_response(
            &self.engine,
            self.context_id,
            token_id,
            num_headers,
            body_size,
        );
    }

    fn on_done(&mut self) -> bool {
        let effects = self.engine.borrow_mut().on_done(self.context_id);
        perform(&self.engine, self.context_id, effects);
        true
    }
}

impl HttpContext for RequestFilter {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> HostAction {
        let effects =
            self.engine
                .borrow_mut()
                .on_request_headers(self.context_id, decision_body, now_ms);
        perform(&self.engine, self.context_id, effects);
        self.flow()
    }

    fn on_http_request_body(&mut self, _body_size: usize, _end_of_stream: bool) -> HostAction {
        // Continue here would let Envoy forward the paused headers before the decision.
        self.flow()
    }

    fn on_http_request_trailers(&mut self, _num_trailers: usize) -> HostAction {
        self.flow()
    }

    fn on_http_response_headers(
        &mut self,
        _num_headers: usize,
        _end_of_stream: bool,
    ) -> HostAction {
        let Some(config) = self.engine.borrow().config() else {
            return HostAction::Continue;
        };
        if self
            .engine
            .borrow()
            .response_headers(self.context_id)
            .is_none()
        {
            return HostAction::Continue;
        }
        let map = host::header_pairs(MapType::HttpResponseHeaders);
        let pairs = map.as_deref().and_then(header_map::parse);
        match &pairs {
            Some(pairs) => {
                let (status, charge) = usage::from_response(pairs, &config.charge_header);
                self.report_usage(
                    MapType::HttpResponseHeaders,
                    &config.charge_header,
                    status,
                    charge,
                );
            }
            // The host refused the map: ask for the two values one by one.
            None => self.take_usage(MapType::HttpResponseHeaders),
        }
        let engine = self.engine.borrow();
        let Some(ours) = engine.response_headers(self.context_id) else {
            return HostAction::Continue;
        };
        let present: Vec<&[u8]> = match pairs {
            Some(pairs) => pairs.into_iter().map(|(name, _)| name).collect(),
            // The host refused the map: at least the names we know go.
            None => RATE_LIMIT_HEADERS.iter().map(|n| n.as_bytes()).collect(),
        };
        for name in upstream_headers::to_remove(present, &ours.replace) {
            host::remove_response_header(name);
        }
        for (name, value) in &ours.replace {
            host::replace_response_header(name.as_bytes(), value.as_bytes());
        }
        for (name, value) in &ours.append {
            host::add_response_header(name.as_bytes(), value.as_bytes());
        }
        HostAction::Continue
    }

    fn on_http_response_trailers(&mut self, _num_trailers: usize) -> HostAction {
        self.take_usage(MapType::HttpResponseTrailers);
        HostAction::Continue
    }
}
