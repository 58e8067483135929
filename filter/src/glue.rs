//! proxy-wasm glue: reads from and writes to the host, decides nothing.
//!
//! A panic here traps the worker's VM for every later request, so no SDK helper that unwraps
//! is used: every host call goes through `proxy_wasm::hostcalls`, its `Result` is handled, and
//! header values are read as bytes (the String getters unwrap on invalid UTF-8).

use std::cell::Cell;
use std::rc::Rc;
use std::time::UNIX_EPOCH;

use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{
    Action as HostAction, BufferType, ContextType, LogLevel, MapType, MetricType,
};
use rl_wire::{DECISION_PATH, DECISION_SECRET_HEADER};

use crate::config::PluginConfig;
use crate::evidence::{RawRequest, decision_request, encode_decision_request};
use crate::header_map;
use crate::log_throttle::LogThrottle;
use crate::response::{
    self, Action, CONTROL_PLANE_ERRORS_METRIC, CallBody, CallResult, ControlPlaneError, Decision,
    Headers, METRIC_NAMES,
};

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Warn);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(Root { config: None }) });
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

struct Root {
    config: Option<Rc<PluginConfig>>,
}

impl Context for Root {}

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

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        // Returning None would make the SDK panic; a context without a config passes traffic
        // (Envoy does not start a plugin whose on_configure failed, so this is theoretical).
        Some(Box::new(RequestFilter {
            config: self.config.clone(),
            state: State::Start,
        }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

enum State {
    Start,
    /// Decision call in flight (its token).
    Waiting(u32),
    /// Request forwarded; these headers go on the response.
    Forwarded(Headers),
    /// Answered locally.
    Answered,
}

struct RequestFilter {
    config: Option<Rc<PluginConfig>>,
    state: State,
}

#[link(wasm_import_module = "env")]
unsafe extern "C" {
    fn proxy_get_header_map_pairs(
        map_type: MapType,
        return_map_data: *mut *mut u8,
        return_map_size: *mut usize,
    ) -> proxy_wasm::types::Status;
}

/// Every request header in one host call (one call per header costs several times more).
/// The SDK's getter is not used: it panics on a non-UTF-8 name or an unexpected status.
fn request_header_pairs() -> Option<Vec<u8>> {
    let mut data: *mut u8 = std::ptr::null_mut();
    let mut size: usize = 0;
    // SAFETY: on success the host hands over a buffer of `size` bytes it allocated with this
    // module's `proxy_on_memory_allocate` (the SDK's, a boxed slice of exactly that length),
    // which the SDK's own map getters also take over as a Vec.
    unsafe {
        match proxy_get_header_map_pairs(MapType::HttpRequestHeaders, &mut data, &mut size) {
            proxy_wasm::types::Status::Ok if data.is_null() || size == 0 => Some(Vec::new()),
            proxy_wasm::types::Status::Ok => Some(Vec::from_raw_parts(data, size, size)),
            _ => None,
        }
    }
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
        let all = request_header_pairs();
        if let Some(pairs) = all.as_deref().and_then(header_map::parse) {
            let raw = header_map::raw_request(&pairs, &config.api_key_header, source.as_deref());
            return encode_decision_request(decision_request(&raw, &config.trusted_proxies));
        }
        // The host refused the whole map: one call per header instead.
        // Envoy joins repeated X-Forwarded-For headers into one comma-separated value.
        let forwarded_for = request_header("x-forwarded-for");
        let real_ip = request_header("x-real-ip");
        let api_key = request_header(&config.api_key_header);
        let authorization = request_header("authorization");
        let method = request_header(":method");
        let path = request_header(":path");
        let raw = RawRequest {
            source_address: source.as_deref(),
            forwarded_for: forwarded_for.as_deref().into_iter().collect(),
            real_ip: real_ip.as_deref(),
            api_key: api_key.as_deref(),
            authorization: authorization.as_deref(),
            method: method.as_deref(),
            path: path.as_deref(),
        };
        encode_decision_request(decision_request(&raw, &config.trusted_proxies))
    }

    /// Carries out a decision. `resume` is set when the request was paused and must be
    /// continued explicitly (i.e. from the call-response callback).
    fn apply(&mut self, config: &PluginConfig, decision: Decision, resume: bool) -> HostAction {
        count(decision.outcome.metric_index());
        if let Some(error) = &decision.error {
            count(CONTROL_PLANE_ERRORS_METRIC);
            log_control_plane_error(error, config);
        }
        match decision.action {
            Action::Resume { response_headers } => {
                self.state = State::Forwarded(response_headers);
                if resume {
                    let _ = hostcalls::resume_http_request();
                }
                HostAction::Continue
            }
            Action::Reply(reply) => {
                self.state = State::Answered;
                let headers: Vec<(&str, &str)> = reply
                    .headers
                    .iter()
                    .map(|(name, value)| (*name, value.as_str()))
                    .collect();
                let _ = hostcalls::send_http_response(reply.status, headers, Some(&reply.body));
                HostAction::Pause
            }
        }
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
        if !matches!(self.state, State::Waiting(token) if token == token_id) {
            return;
        }
        let Some(config) = self.config.clone() else {
            return;
        };
        // With no headers the host has no header map: asking for `:status` would make the
        // SDK panic, so a reset is recognised before anything is read.
        let decision = if num_headers == 0 {
            response::decide(CallResult::Reset, config.fail_open)
        } else {
            let status =
                hostcalls::get_map_value_bytes(MapType::HttpCallResponseHeaders, ":status")
                    .ok()
                    .flatten();
            let body = if CallBody::should_read(body_size) {
                hostcalls::get_buffer(BufferType::HttpCallResponseBody, 0, body_size)
                    .ok()
                    .flatten()
            } else {
                None
            };
            let result = CallResult::Response {
                status: status.as_deref(),
                body: CallBody::from_read(body_size, body.as_deref()),
            };
            response::decide(result, config.fail_open)
        };
        self.apply(&config, decision, true);
    }
}

impl HttpContext for RequestFilter {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> HostAction {
        let Some(config) = self.config.clone() else {
            return HostAction::Continue;
        };
        if !matches!(self.state, State::Start) {
            return HostAction::Continue;
        }
        let body = Self::decision_body(&config);
        let mut headers = vec![
            (":method", "POST"),
            (":path", DECISION_PATH),
            (":authority", config.authority.as_str()),
            ("content-type", "application/json"),
        ];
        if let Some(secret) = &config.decision_secret {
            headers.push((DECISION_SECRET_HEADER, secret.as_str()));
        }
        match hostcalls::dispatch_http_call(
            &config.cluster,
            headers,
            Some(&body),
            vec![],
            config.timeout,
        ) {
            Ok(token) => {
                self.state = State::Waiting(token);
                HostAction::Pause
            }
            Err(_) => {
                let decision = response::decide(CallResult::DispatchFailed, config.fail_open);
                self.apply(&config, decision, false)
            }
        }
    }

    fn on_http_request_body(&mut self, _body_size: usize, _end_of_stream: bool) -> HostAction {
        // Continue here would let Envoy forward the paused headers before the decision.
        match self.state {
            State::Waiting(_) | State::Answered => HostAction::Pause,
            State::Start | State::Forwarded(_) => HostAction::Continue,
        }
    }

    fn on_http_request_trailers(&mut self, _num_trailers: usize) -> HostAction {
        match self.state {
            State::Waiting(_) | State::Answered => HostAction::Pause,
            State::Start | State::Forwarded(_) => HostAction::Continue,
        }
    }

    fn on_http_response_headers(
        &mut self,
        _num_headers: usize,
        _end_of_stream: bool,
    ) -> HostAction {
        if let State::Forwarded(headers) = &self.state {
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
