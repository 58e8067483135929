//! A small proxy-wasm host on wasmtime that runs the release `.wasm` users deploy, in process,
//! the way Envoy drives it: one VM per test, one HTTP stream at a time ([`FilterVm::request`])
//! or several in flight at once ([`FilterVm::start`], [`FilterVm::answer_call`],
//! [`FilterVm::tick`], [`FilterVm::finish`]).
//!
//! ```no_run
//! use rl_tests::wasm_host::{FilterVm, Outcome, Request};
//!
//! let mut vm = FilterVm::new(r#"{"cluster":"rl"}"#).expect("config accepted");
//! let run = vm.request(Request::get("/api/v1/request").from("203.0.113.7:4000"));
//! let call = run.call().expect("a decision call"); // cluster, headers, body, timeout
//! assert_eq!(call.cluster, "rl");
//! let outcome = run.respond(&[(":status", "200")], r#"{"verdict":"allow","tier":"free"}"#);
//! assert!(matches!(outcome, Outcome::Forwarded { .. }));
//! vm.assert_healthy(); // not trapped, no ABI misuse
//! ```
//!
//! The module is compiled once per process ([`FilterVm::new`] instantiates it); the imports the
//! filter declares but this host does not implement are linked to stubs that trap with the
//! import's name, so a filter that starts using a new host call fails its tests visibly.
//! [`abi`] holds the host functions; this file drives the guest's exported callbacks.

mod abi;

use std::collections::BTreeMap;
use std::fmt;
use std::sync::OnceLock;
use std::time::Duration;

use wasmtime::{
    Config, Engine, ExternType, Instance, InstancePre, Linker, Module, Store, TypedFunc,
};

use abi::{CallResponse, HostState, Stream};

/// Where the host's clock starts (2023-11-14T22:13:20Z); it moves only by
/// [`FilterVm::advance_clock`], so time-dependent behaviour is deterministic.
pub const CLOCK_START_SECS: u64 = 1_700_000_000;

/// Context id of the plugin's root context (Envoy creates it first, with parent 0).
pub const ROOT_CONTEXT: u32 = 1;

/// Headers as Envoy keeps them: lowercase names, byte values, repeated names allowed.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct HeaderMap(Vec<(String, Vec<u8>)>);

impl HeaderMap {
    pub fn from_pairs(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::default();
        for (name, value) in pairs {
            map.append(name, value);
        }
        map
    }

    pub fn append(&mut self, name: &str, value: impl AsRef<[u8]>) {
        self.0
            .push((name.to_ascii_lowercase(), value.as_ref().to_vec()));
    }

    /// Envoy's `setCopy`: the first entry takes the value, the other entries of the name go.
    pub fn replace(&mut self, name: &str, value: impl AsRef<[u8]>) {
        let name = name.to_ascii_lowercase();
        match self.0.iter().position(|(n, _)| *n == name) {
            Some(first) => {
                self.0[first].1 = value.as_ref().to_vec();
                let mut index = 0;
                self.0.retain(|(n, _)| {
                    index += 1;
                    index - 1 == first || *n != name
                });
            }
            None => self.0.push((name, value.as_ref().to_vec())),
        }
    }

    pub fn remove(&mut self, name: &str) {
        let name = name.to_ascii_lowercase();
        self.0.retain(|(n, _)| *n != name);
    }

    /// The first value of `name` (case-insensitive), as bytes. Envoy's `get` also returns only
    /// the first value.
    pub fn get_bytes(&self, name: &str) -> Option<&[u8]> {
        self.0
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_slice())
    }

    /// The first value of `name` as text; `None` when absent or not UTF-8.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.get_bytes(name)
            .and_then(|v| std::str::from_utf8(v).ok())
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &[u8])> {
        self.0.iter().map(|(n, v)| (n.as_str(), v.as_slice()))
    }

    /// Names starting with `prefix` (e.g. `"x-ratelimit-"`), in order.
    pub fn names_with_prefix(&self, prefix: &str) -> Vec<&str> {
        self.iter()
            .map(|(n, _)| n)
            .filter(|n| n.starts_with(prefix))
            .collect()
    }
}

impl fmt::Debug for HeaderMap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.iter().map(|(n, v)| (n, String::from_utf8_lossy(v))))
            .finish()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum LogLevel {
    Trace,
    Debug,
    Info,
    Warn,
    Error,
    Critical,
}

impl LogLevel {
    fn from_abi(level: u32) -> Option<LogLevel> {
        use LogLevel::*;
        [Trace, Debug, Info, Warn, Error, Critical]
            .get(level as usize)
            .copied()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    pub level: LogLevel,
    pub message: String,
}

/// What a stream callback returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Continue,
    Pause,
    Other(u32),
}

impl Action {
    fn from_abi(value: u32) -> Action {
        match value {
            0 => Action::Continue,
            1 => Action::Pause,
            other => Action::Other(other),
        }
    }
}

/// A `proxy_http_call` the filter made.
#[derive(Debug, Clone)]
pub struct HttpCall {
    pub token: u32,
    /// The context that was current when the call was made.
    pub context: u32,
    pub cluster: String,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
    pub trailers: HeaderMap,
    pub timeout: Duration,
}

/// A `proxy_send_local_response`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalResponse {
    pub status: u32,
    pub details: String,
    /// The headers the client gets: as sent, then through the filter's own
    /// `on_response_headers` (Envoy runs local replies through the encoder filters).
    pub headers: HeaderMap,
    pub body: Vec<u8>,
    pub grpc_status: i32,
}

/// How a request ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Went to the upstream; the upstream's response headers after `on_response_headers`.
    Forwarded { response_headers: HeaderMap },
    /// Answered by the filter itself.
    Local(LocalResponse),
    /// Neither forwarded nor answered: Envoy would hold the request until its stream timeout.
    Stalled,
    /// The VM trapped (message); in Envoy the worker's VM is dead from then on.
    Trapped(String),
}

impl Outcome {
    pub fn local(&self) -> Option<&LocalResponse> {
        match self {
            Outcome::Local(reply) => Some(reply),
            _ => None,
        }
    }

    /// Response headers of a forwarded request.
    pub fn forwarded(&self) -> Option<&HeaderMap> {
        match self {
            Outcome::Forwarded { response_headers } => Some(response_headers),
            _ => None,
        }
    }
}

/// A client request to run through the filter.
#[derive(Debug, Clone)]
pub struct Request {
    headers: HeaderMap,
    source: Option<String>,
    body: Option<u32>,
    upstream_response: HeaderMap,
}

impl Request {
    /// `GET path` from `192.0.2.1:50000`; the upstream answers `200` (`text/plain`).
    pub fn get(path: &str) -> Request {
        Request::new("GET", path)
    }

    pub fn new(method: &str, path: &str) -> Request {
        Request {
            headers: HeaderMap::from_pairs(&[
                (":authority", "api.example.com"),
                (":path", path),
                (":method", method),
                (":scheme", "http"),
                ("user-agent", "rl-tests"),
            ]),
            source: Some("192.0.2.1:50000".into()),
            body: None,
            upstream_response: HeaderMap::from_pairs(&[
                (":status", "200"),
                ("content-type", "text/plain"),
            ]),
        }
    }

    /// Adds a header (repeated names are kept as separate entries).
    pub fn header(mut self, name: &str, value: impl AsRef<[u8]>) -> Request {
        self.headers.append(name, value);
        self
    }

    /// Replaces (or, with `None`, removes) a header, pseudo-headers included.
    pub fn set_header(mut self, name: &str, value: Option<&[u8]>) -> Request {
        match value {
            Some(v) => self.headers.replace(name, v),
            None => self.headers.remove(name),
        }
        self
    }

    /// The `source.address` property (Envoy's form: `1.2.3.4:5` or `[::1]:5`); `None`: absent.
    pub fn source(mut self, address: Option<&str>) -> Request {
        self.source = address.map(str::to_owned);
        self
    }

    pub fn from(self, address: &str) -> Request {
        self.source(Some(address))
    }

    /// The request has a body of `len` bytes (headers then arrive without end of stream).
    pub fn body(mut self, len: u32) -> Request {
        self.body = Some(len);
        self
    }

    /// The upstream's response headers (`:status` included).
    pub fn upstream_response(mut self, headers: &[(&str, &str)]) -> Request {
        self.upstream_response = HeaderMap::from_pairs(headers);
        self
    }
}

/// The plugin configuration was refused (`on_vm_start`/`on_configure` returned false or
/// trapped). Envoy then refuses to load the filter.
pub struct ConfigRejected {
    pub trap: Option<String>,
    pub logs: Vec<LogLine>,
}

impl fmt::Debug for ConfigRejected {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "configuration rejected (trap: {:?}); logs: {:?}",
            self.trap, self.logs
        )
    }
}

/// The imports of the module, split by how this host links them.
#[derive(Debug, Clone)]
pub struct Imports {
    pub implemented: Vec<String>,
    /// Linked to a stub that traps with the import's name.
    pub trapping: Vec<String>,
}

/// Compiled once per process: compiling the module costs far more than instantiating it.
struct Host {
    engine: Engine,
    pre: InstancePre<HostState>,
    imports: Imports,
}

fn host() -> &'static Host {
    static HOST: OnceLock<Host> = OnceLock::new();
    HOST.get_or_init(|| {
        let path = crate::prereq::filter_wasm();
        load(&path).unwrap_or_else(|err| panic!("cannot load {}: {err:?}", path.display()))
    })
}

fn load(path: &std::path::Path) -> wasmtime::Result<Host> {
    let bytes = std::fs::read(path).map_err(wasmtime::Error::new)?;
    let mut config = Config::new();
    // Cranelift itself is unoptimised in test builds and compiling the module dominates a test
    // run: debug builds skip Cranelift's optimisations (about 30% less CPU); optimised
    // builds (benchmarks) keep them, so the figures are those of optimised code.
    if cfg!(debug_assertions) {
        config.cranelift_opt_level(wasmtime::OptLevel::None);
    }
    let engine = Engine::new(&config)?;
    let module = Module::new(&engine, &bytes)?;
    let mut linker = Linker::new(&engine);
    abi::define(&mut linker)?;
    let mut probe = Store::new(&engine, HostState::default());
    let mut imports = Imports {
        implemented: Vec::new(),
        trapping: Vec::new(),
    };
    for import in module.imports() {
        let name = format!("{}.{}", import.module(), import.name());
        if linker
            .get(&mut probe, import.module(), import.name())
            .is_ok()
        {
            imports.implemented.push(name);
            continue;
        }
        let ExternType::Func(ty) = import.ty() else {
            wasmtime::bail!("import {name} is not a function: this host provides only functions");
        };
        let message = format!(
            "the filter called {name}, which rl_tests::wasm_host does not implement \
             (implement it in tests/src/wasm_host/abi.rs)"
        );
        linker.func_new(import.module(), import.name(), ty, move |_, _, _| {
            Err(wasmtime::Error::msg(message.clone()))
        })?;
        imports.trapping.push(name);
    }
    let pre = linker.instantiate_pre(&module)?;
    Ok(Host {
        engine,
        pre,
        imports,
    })
}

/// The module's imports and how they are linked (compiles the module on first use).
pub fn imports() -> &'static Imports {
    &host().imports
}

/// The guest's exported callbacks (ABI 0.2.1), resolved once per instance.
struct Exports {
    on_context_create: TypedFunc<(u32, u32), ()>,
    on_vm_start: TypedFunc<(u32, u32), u32>,
    on_configure: TypedFunc<(u32, u32), u32>,
    on_request_headers: TypedFunc<(u32, u32, u32), u32>,
    on_request_body: TypedFunc<(u32, u32, u32), u32>,
    on_request_trailers: TypedFunc<(u32, u32), u32>,
    on_response_headers: TypedFunc<(u32, u32, u32), u32>,
    on_response_trailers: TypedFunc<(u32, u32), u32>,
    on_http_call_response: TypedFunc<(u32, u32, u32, u32, u32), ()>,
    on_tick: TypedFunc<u32, ()>,
    on_done: TypedFunc<u32, u32>,
    on_log: TypedFunc<u32, ()>,
    on_delete: TypedFunc<u32, ()>,
}

impl Exports {
    fn resolve(instance: &Instance, store: &mut Store<HostState>) -> wasmtime::Result<Exports> {
        Ok(Exports {
            on_context_create: instance.get_typed_func(&mut *store, "proxy_on_context_create")?,
            on_vm_start: instance.get_typed_func(&mut *store, "proxy_on_vm_start")?,
            on_configure: instance.get_typed_func(&mut *store, "proxy_on_configure")?,
            on_request_headers: instance.get_typed_func(&mut *store, "proxy_on_request_headers")?,
            on_request_body: instance.get_typed_func(&mut *store, "proxy_on_request_body")?,
            on_request_trailers: instance
                .get_typed_func(&mut *store, "proxy_on_request_trailers")?,
            on_response_headers: instance
                .get_typed_func(&mut *store, "proxy_on_response_headers")?,
            on_response_trailers: instance
                .get_typed_func(&mut *store, "proxy_on_response_trailers")?,
            on_http_call_response: instance
                .get_typed_func(&mut *store, "proxy_on_http_call_response")?,
            on_tick: instance.get_typed_func(&mut *store, "proxy_on_tick")?,
            on_done: instance.get_typed_func(&mut *store, "proxy_on_done")?,
            on_log: instance.get_typed_func(&mut *store, "proxy_on_log")?,
            on_delete: instance.get_typed_func(&mut *store, "proxy_on_delete")?,
        })
    }
}

/// One instance of the filter with its plugin configuration applied: an Envoy worker's VM.
pub struct FilterVm {
    store: Store<HostState>,
    exports: Exports,
    next_context: u32,
    trap: Option<String>,
}

impl fmt::Debug for FilterVm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FilterVm")
            .field("trap", &self.trap)
            .field("metrics", &self.metrics())
            .finish_non_exhaustive()
    }
}

impl FilterVm {
    /// Instantiates the filter and runs Envoy's start sequence: `_initialize`, root context,
    /// `proxy_on_vm_start`, `proxy_on_configure` with `plugin_config`.
    pub fn new(plugin_config: impl AsRef<[u8]>) -> Result<FilterVm, ConfigRejected> {
        let plugin_config = plugin_config.as_ref();
        let host = host();
        let state = HostState {
            plugin_config: plugin_config.to_vec(),
            clock_nanos: CLOCK_START_SECS * 1_000_000_000,
            ..HostState::default()
        };
        let mut store = Store::new(&host.engine, state);
        let (instance, exports) = host
            .pre
            .instantiate(&mut store)
            .and_then(|instance| Ok((instance, Exports::resolve(&instance, &mut store)?)))
            .unwrap_or_else(|err| panic!("cannot instantiate the filter: {err:?}"));
        let memory = instance.get_memory(&mut store, "memory");
        let allocate = ["proxy_on_memory_allocate", "malloc"]
            .iter()
            .find_map(|name| instance.get_typed_func::<u32, u32>(&mut store, name).ok());
        store.data_mut().memory = memory;
        store.data_mut().allocate = allocate;
        let mut vm = FilterVm {
            store,
            exports,
            next_context: ROOT_CONTEXT + 1,
            trap: None,
        };

        // A WASI reactor initialises itself in `_initialize` (a command in `_start`).
        for name in ["_initialize", "_start"] {
            if let Ok(init) = instance.get_typed_func::<(), ()>(&mut vm.store, name) {
                if let Err(err) = init.call(&mut vm.store, ()) {
                    vm.record_trap(err, 0);
                }
                break;
            }
        }
        vm.store.data_mut().live_contexts.insert(ROOT_CONTEXT);
        let config_len = plugin_config.len() as u32;
        let started = vm
            .enter(ROOT_CONTEXT, |e| &e.on_context_create, (ROOT_CONTEXT, 0))
            .and_then(|()| vm.enter(ROOT_CONTEXT, |e| &e.on_vm_start, (ROOT_CONTEXT, 0)))
            .is_some_and(|ok| ok != 0);
        let configured = started
            && vm
                .enter(
                    ROOT_CONTEXT,
                    |e| &e.on_configure,
                    (ROOT_CONTEXT, config_len),
                )
                .is_some_and(|ok| ok != 0);
        if configured {
            Ok(vm)
        } else {
            Err(ConfigRejected {
                trap: vm.trap.take(),
                logs: std::mem::take(&mut vm.store.data_mut().logs),
            })
        }
    }

    /// Calls an exported callback with `context` current; a trap is recorded and the VM is dead
    /// from then on (every later call returns `None`), as in Envoy.
    fn enter<P, R>(
        &mut self,
        context: u32,
        func: impl FnOnce(&Exports) -> &TypedFunc<P, R>,
        params: P,
    ) -> Option<R>
    where
        P: wasmtime::WasmParams,
        R: wasmtime::WasmResults,
    {
        if self.trap.is_some() {
            return None;
        }
        self.store.data_mut().effective_context = context;
        let logs_before = self.store.data().logs.len();
        let func = func(&self.exports).clone();
        match func.call(&mut self.store, params) {
            Ok(result) => Some(result),
            Err(err) => {
                self.record_trap(err, logs_before);
                None
            }
        }
    }

    /// Records a trap; `logs_from` is where the trapping call's log lines start.
    fn record_trap(&mut self, err: wasmtime::Error, logs_from: usize) {
        // The SDK's panic hook logs the panic message (Critical) just before the abort.
        let logs = &self.store.data().logs;
        let panic = logs
            .get(logs_from..)
            .unwrap_or_default()
            .iter()
            .rev()
            .find(|l| l.level == LogLevel::Critical)
            .map(|l| format!("; guest panic: {}", l.message))
            .unwrap_or_default();
        // The root cause names the trap (or the unimplemented import); the wasm backtrace of a
        // stripped release module has no names, so it is left out.
        self.trap = Some(format!("{}{panic}", err.root_cause()));
    }

    /// Runs a request's headers (and body) through the filter. Inspect or answer its decision
    /// call on the returned [`RequestRun`], which ends the request.
    pub fn request(&mut self, request: Request) -> RequestRun<'_> {
        let upstream_response = request.upstream_response.clone();
        let (context, headers_action, body_action) = self.begin(request);
        RequestRun {
            vm: self,
            context,
            upstream_response,
            headers_action,
            body_action,
        }
    }

    /// Starts a request (headers and body) and leaves it in flight, so that several can be:
    /// returns its context id. Answer calls with [`answer_call`](Self::answer_call) and end
    /// the request with [`finish`](Self::finish) or [`cancel`](Self::cancel).
    pub fn start(&mut self, request: Request) -> u32 {
        self.begin(request).0
    }

    fn begin(&mut self, request: Request) -> (u32, Option<Action>, Option<Action>) {
        let context = self.next_context;
        self.next_context += 1;
        let state = self.store.data_mut();
        state.live_contexts.insert(context);
        let num_headers = request.headers.len() as u32;
        state.streams.insert(
            context,
            Stream {
                request_headers: request.headers,
                source_address: request.source,
                ..Stream::default()
            },
        );
        self.enter(context, |e| &e.on_context_create, (context, ROOT_CONTEXT));
        let end_of_stream = u32::from(request.body.is_none());
        let headers_action = self
            .enter(
                context,
                |e| &e.on_request_headers,
                (context, num_headers, end_of_stream),
            )
            .map(Action::from_abi);
        let Some(stream) = self.store.data_mut().streams.get_mut(&context) else {
            return (context, headers_action, None);
        };
        let decided = stream.local_response.is_some() || stream.forwarded;
        match headers_action {
            Some(Action::Continue) if !decided => stream.forwarded = true,
            Some(Action::Pause) if !decided => stream.paused = true,
            _ => {}
        }
        // Envoy hands the body to a filter that stopped on the headers, too.
        let body_action = match request.body {
            Some(len) if stream.local_response.is_none() => self
                .enter(context, |e| &e.on_request_body, (context, len, 1))
                .map(Action::from_abi),
            _ => None,
        };
        (context, headers_action, body_action)
    }

    /// Every call dispatched and not yet answered, oldest first.
    pub fn pending_calls(&self) -> Vec<HttpCall> {
        self.store.data().calls.clone()
    }

    /// Answers the pending call `token` (`headers: None` is a reset), as Envoy does: on the
    /// root context.
    pub fn answer_call(&mut self, token: u32, headers: Option<&[(&str, &str)]>, body: &[u8]) {
        let state = self.store.data_mut();
        let Some(index) = state.calls.iter().position(|c| c.token == token) else {
            panic!("no call {token} pending");
        };
        state.calls.remove(index);
        let headers = headers.map(HeaderMap::from_pairs);
        let num_headers = headers.as_ref().map_or(0, HeaderMap::len) as u32;
        let body_size = body.len() as u32;
        state.call_response = Some(CallResponse {
            headers,
            body: body.to_vec(),
        });
        self.enter(
            ROOT_CONTEXT,
            |e| &e.on_http_call_response,
            (ROOT_CONTEXT, token, num_headers, body_size, 0),
        );
        self.store.data_mut().call_response = None;
    }

    /// Fires the root context's tick, when the filter has set a tick period (as Envoy's
    /// timer would after that period). Returns whether it fired.
    pub fn tick(&mut self) -> bool {
        if self.store.data().tick_period_ms == 0 {
            return false;
        }
        self.enter(ROOT_CONTEXT, |e| &e.on_tick, ROOT_CONTEXT);
        true
    }

    /// Whether the request was forwarded or answered (its decision has been applied).
    pub fn decided(&self, context: u32) -> bool {
        self.store
            .data()
            .streams
            .get(&context)
            .is_some_and(|s| s.forwarded || s.local_response.is_some())
    }

    /// Ends a started request as it stands (see [`RequestRun::finish`]); the upstream answers
    /// `200`.
    pub fn finish(&mut self, context: u32) -> Outcome {
        let upstream = HeaderMap::from_pairs(&[(":status", "200"), ("content-type", "text/plain")]);
        self.finish_stream(context, upstream)
    }

    /// Ends a started request with this upstream response: its headers and, when given, its
    /// trailers (then handed to `on_response_trailers`). Returns the outcome and the trailers
    /// the client gets.
    pub fn finish_response(
        &mut self,
        context: u32,
        headers: &[(&str, &str)],
        trailers: Option<&[(&str, &str)]>,
    ) -> (Outcome, Option<HeaderMap>) {
        if let Some(stream) = self.stream_mut(context) {
            stream.upstream_trailers = trailers.map(HeaderMap::from_pairs);
        }
        let outcome = self.finish_stream(context, HeaderMap::from_pairs(headers));
        (outcome, self.store.data_mut().last_trailers.take())
    }

    /// The client goes away: the stream is destroyed without a response.
    pub fn cancel(&mut self, context: u32) {
        self.end_stream(context);
    }

    /// The host's own floor for one request, for benchmarks: the seven guest entries of a
    /// request's life (create, request headers, call response, response headers, done, log,
    /// delete) with the three filter callbacks replaced by `proxy_on_request_trailers`, which
    /// the SDK dispatches and this filter answers without any host call.
    pub fn bare_stream(&mut self) {
        let context = self.next_context;
        self.next_context += 1;
        self.store.data_mut().live_contexts.insert(context);
        self.enter(context, |e| &e.on_context_create, (context, ROOT_CONTEXT));
        for _ in 0..3 {
            self.enter(context, |e| &e.on_request_trailers, (context, 0));
        }
        self.end_stream(context);
    }

    fn end_stream(&mut self, context: u32) {
        if self.enter(context, |e| &e.on_done, context) == Some(0) {
            let what = "on_done returned false (the filter would have to call proxy_done)";
            self.store.data_mut().violations.push(what.into());
        }
        self.enter(context, |e| &e.on_log, context);
        self.enter(context, |e| &e.on_delete, context);
        let state = self.store.data_mut();
        state.live_contexts.remove(&context);
        state.streams.remove(&context);
        // Envoy cancels the calls of a destroyed stream.
        state.calls.retain(|call| call.context != context);
    }

    /// Why the VM trapped, if it did. A trapped VM stays dead.
    pub fn trapped(&self) -> Option<&str> {
        self.trap.as_deref()
    }

    /// ABI misuse Envoy would put up with but that is a filter bug (e.g. `continue_stream` on
    /// a request that is not paused, a decision call without `:authority`).
    pub fn violations(&self) -> &[String] {
        &self.store.data().violations
    }

    /// Panics (with the reason) when the VM trapped or misused the ABI.
    pub fn assert_healthy(&self) {
        if let Some(trap) = &self.trap {
            panic!("the filter VM trapped: {trap}");
        }
        let violations = self.violations();
        assert!(violations.is_empty(), "ABI misuse: {violations:?}");
    }

    /// Makes later `proxy_http_call`s fail synchronously with BadArgument, as Envoy does for a
    /// cluster it does not know.
    pub fn fail_dispatch(&mut self, fail: bool) {
        self.store.data_mut().fail_dispatch = fail;
    }

    pub fn advance_clock(&mut self, by: Duration) {
        let nanos = u64::try_from(by.as_nanos()).unwrap_or(u64::MAX);
        let clock = &mut self.store.data_mut().clock_nanos;
        *clock = clock.saturating_add(nanos);
    }

    pub fn logs(&self) -> &[LogLine] {
        &self.store.data().logs
    }

    pub fn take_logs(&mut self) -> Vec<LogLine> {
        std::mem::take(&mut self.store.data_mut().logs)
    }

    /// What the guest wrote to stdout/stderr through WASI.
    pub fn wasi_output(&self) -> &[u8] {
        &self.store.data().wasi_output
    }

    /// A metric's value by the name the filter defined (`rate_limit_filter.allowed`);
    /// `None` when not defined.
    pub fn metric(&self, name: &str) -> Option<u64> {
        let metrics = &self.store.data().metrics;
        metrics.iter().find(|(n, _, _)| n == name).map(|m| m.2)
    }

    pub fn metrics(&self) -> BTreeMap<String, u64> {
        let metrics = &self.store.data().metrics;
        metrics.iter().map(|(n, _, v)| (n.clone(), *v)).collect()
    }

    /// The keys of proxy-wasm shared data the filter wrote.
    pub fn shared_data_keys(&self) -> Vec<String> {
        self.store.data().shared_data.keys().cloned().collect()
    }

    /// A shared-data value (empty when absent).
    pub fn shared_data(&self, key: &str) -> Vec<u8> {
        let data = &self.store.data().shared_data;
        data.get(key).map(|(v, _)| v.clone()).unwrap_or_default()
    }

    /// Overwrites a shared-data value (as another worker, or a corruption, would).
    pub fn set_shared_data(&mut self, key: &str, value: &[u8]) {
        let state = self.store.data_mut();
        state.next_cas += 1;
        let cas = state.next_cas;
        state
            .shared_data
            .insert(key.to_string(), (value.to_vec(), cas));
    }

    /// `proxy_set_tick_period_milliseconds`'s last value (0: no ticks).
    pub fn tick_period_ms(&self) -> u32 {
        self.store.data().tick_period_ms
    }
}

/// A request in flight. End it with [`respond`](Self::respond),
/// [`respond_reset`](Self::respond_reset) or [`finish`](Self::finish).
pub struct RequestRun<'vm> {
    vm: &'vm mut FilterVm,
    context: u32,
    upstream_response: HeaderMap,
    headers_action: Option<Action>,
    body_action: Option<Action>,
}

impl RequestRun<'_> {
    /// What `on_request_headers` returned (`None`: trapped).
    pub fn headers_action(&self) -> Option<Action> {
        self.headers_action
    }

    /// What `on_request_body` returned, when the request had a body.
    pub fn body_action(&self) -> Option<Action> {
        self.body_action
    }

    /// The decision call this request dispatched and nobody answered yet.
    pub fn call(&self) -> Option<&HttpCall> {
        let calls = &self.vm.store.data().calls;
        calls.iter().find(|call| call.context == self.context)
    }

    /// Answers the pending call: `headers` include `:status`.
    pub fn respond(self, headers: &[(&str, &str)], body: impl AsRef<[u8]>) -> Outcome {
        let headers = HeaderMap::from_pairs(headers);
        self.answer(Some(headers), body.as_ref().to_vec())
    }

    /// The call is reset: `on_http_call_response` with no headers, as Envoy reports an
    /// upstream reset (there is then no response header map at all).
    pub fn respond_reset(self) -> Outcome {
        self.answer(None, Vec::new())
    }

    fn answer(self, headers: Option<HeaderMap>, body: Vec<u8>) -> Outcome {
        let state = self.vm.store.data_mut();
        let Some(index) = state.calls.iter().position(|c| c.context == self.context) else {
            panic!("the filter has no decision call pending to answer");
        };
        let call = state.calls.remove(index);
        let num_headers = headers.as_ref().map_or(0, HeaderMap::len) as u32;
        let body_size = body.len() as u32;
        state.call_response = Some(CallResponse { headers, body });
        // Envoy makes the call on the root context and reports it there; the SDK switches to
        // the stream with proxy_set_effective_context.
        self.vm.enter(
            ROOT_CONTEXT,
            |e| &e.on_http_call_response,
            (ROOT_CONTEXT, call.token, num_headers, body_size, 0),
        );
        self.vm.store.data_mut().call_response = None;
        self.finish()
    }

    /// Ends the request as it stands: the response phase (upstream response or the local
    /// reply, through `on_response_headers`), then `on_done`, `on_log`, `on_delete`.
    pub fn finish(self) -> Outcome {
        self.vm.finish_stream(self.context, self.upstream_response)
    }
}

impl FilterVm {
    fn finish_stream(&mut self, context: u32, upstream_response: HeaderMap) -> Outcome {
        let vm = self;
        let Some(stream) = vm.store.data_mut().streams.get_mut(&context) else {
            panic!("no stream {context} in flight");
        };
        let outcome = if let Some(mut local) = stream.local_response.take() {
            let mut headers = HeaderMap::from_pairs(&[(":status", &local.status.to_string())]);
            headers.0.extend(local.headers.0);
            let end_of_stream = u32::from(local.body.is_empty());
            stream.response_headers = Some(headers);
            vm.response_headers(context, end_of_stream);
            let mut seen = vm
                .stream_mut(context)
                .and_then(|s| s.response_headers.take())
                .unwrap_or_default();
            seen.remove(":status");
            local.headers = seen;
            Outcome::Local(local)
        } else if stream.forwarded {
            stream.response_headers = Some(upstream_response);
            vm.response_headers(context, 0);
            let headers = vm
                .stream_mut(context)
                .and_then(|s| s.response_headers.take());
            vm.response_trailers(context);
            Outcome::Forwarded {
                response_headers: headers.unwrap_or_default(),
            }
        } else {
            Outcome::Stalled
        };
        vm.end_stream(context);
        match &vm.trap {
            Some(trap) => Outcome::Trapped(trap.clone()),
            None => outcome,
        }
    }

    fn stream_mut(&mut self, context: u32) -> Option<&mut Stream> {
        self.store.data_mut().streams.get_mut(&context)
    }
}

impl FilterVm {
    /// The upstream's trailers, if it sends any, through `on_response_trailers`; what the
    /// client gets of them is kept for [`finish_response`](Self::finish_response).
    fn response_trailers(&mut self, context: u32) {
        let Some(stream) = self.stream_mut(context) else {
            return;
        };
        let Some(trailers) = stream.upstream_trailers.take() else {
            return;
        };
        let num = trailers.len() as u32;
        stream.response_trailers = Some(trailers);
        let action = self.enter(context, |e| &e.on_response_trailers, (context, num));
        if let Some(other) = action.filter(|a| *a != 0) {
            let what = format!("on_response_trailers returned {other}: the response would stall");
            self.store.data_mut().violations.push(what);
        }
        let seen = self
            .stream_mut(context)
            .and_then(|s| s.response_trailers.take());
        self.store.data_mut().last_trailers = seen;
    }

    fn response_headers(&mut self, context: u32, end_of_stream: u32) {
        let num = self
            .store
            .data()
            .streams
            .get(&context)
            .and_then(|s| s.response_headers.as_ref())
            .map_or(0, HeaderMap::len);
        let action = self.enter(
            context,
            |e| &e.on_response_headers,
            (context, num as u32, end_of_stream),
        );
        if let Some(other) = action.filter(|a| *a != 0) {
            let what = format!("on_response_headers returned {other}: the response would stall");
            self.store.data_mut().violations.push(what);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_map_follows_envoy_semantics() {
        let mut map = HeaderMap::from_pairs(&[("A", "1"), ("b", "2"), ("a", "3")]);
        assert_eq!(map.get("a"), Some("1"), "first value, names lowercased");
        map.replace("A", "9");
        assert_eq!(map, HeaderMap::from_pairs(&[("a", "9"), ("b", "2")]));
        map.replace("c", "4");
        map.append("c", "5");
        map.remove("C");
        assert_eq!(map, HeaderMap::from_pairs(&[("a", "9"), ("b", "2")]));
        map.append("x", b"\xff".as_slice());
        assert_eq!(
            (map.get("x"), map.get_bytes("x")),
            (None, Some(b"\xff".as_slice()))
        );
    }

    #[test]
    fn log_levels_and_actions_decode() {
        assert_eq!(LogLevel::from_abi(3), Some(LogLevel::Warn));
        assert_eq!(LogLevel::from_abi(6), None);
        assert_eq!(Action::from_abi(1), Action::Pause);
        assert_eq!(Action::from_abi(3), Action::Other(3));
    }
}
