//! The host side of the proxy-wasm ABI 0.2.1: the `env.proxy_*` and WASI functions the filter
//! imports, with the semantics (and return statuses) Envoy's host gives them.
//!
//! Everything the guest asks for lives in [`HostState`]; the functions here only move bytes
//! between it and guest memory. Values handed back to the guest are written into memory the
//! guest allocates with its own `proxy_on_memory_allocate`, exactly as Envoy does, because the
//! SDK frees them with `Vec::from_raw_parts`.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use wasmtime::{Caller, Linker, Memory, TypedFunc};

use super::{HeaderMap, HttpCall, LocalResponse, LogLevel, LogLine};

/// Return statuses of the ABI (`WasmResult` in Envoy, `Status` in the SDK).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Status {
    Ok = 0,
    NotFound = 1,
    BadArgument = 2,
    ParseFailure = 4,
    InvalidMemoryAccess = 6,
}

/// Why a host function did not succeed: a status the guest sees, or a trap that ends the call.
enum Fail {
    Status(Status),
    Trap(wasmtime::Error),
}

impl From<Status> for Fail {
    fn from(status: Status) -> Fail {
        Fail::Status(status)
    }
}

impl From<wasmtime::Error> for Fail {
    fn from(err: wasmtime::Error) -> Fail {
        Fail::Trap(err)
    }
}

/// The status word a host function returns to the guest.
fn status(result: Result<(), Fail>) -> wasmtime::Result<u32> {
    match result {
        Ok(()) => Ok(Status::Ok as u32),
        Err(Fail::Status(s)) => Ok(s as u32),
        Err(Fail::Trap(err)) => Err(err),
    }
}

/// State of one HTTP stream (several may be in flight at once, as on an Envoy worker).
#[derive(Default)]
pub(super) struct Stream {
    pub request_headers: HeaderMap,
    /// Exists from the response phase on; before that Envoy has no map and answers BadArgument.
    pub response_headers: Option<HeaderMap>,
    /// The upstream's trailers: exist (for the filter) only while `on_response_trailers` runs.
    pub response_trailers: Option<HeaderMap>,
    /// Trailers the upstream will send after its headers, if any.
    pub upstream_trailers: Option<HeaderMap>,
    /// `source.address` property; `None` makes `proxy_get_property` answer NotFound.
    pub source_address: Option<String>,
    /// Set by `proxy_send_local_response`.
    pub local_response: Option<LocalResponse>,
    /// Whether `on_request_headers` returned Pause and nothing has continued the request yet.
    pub paused: bool,
    /// Whether the request went on to the upstream (Continue returned, or `continue_stream`).
    pub forwarded: bool,
}

/// The response of a dispatched call, visible only while `on_http_call_response` runs (as in
/// Envoy). `headers == None` is a reset: Envoy then has no header map at all.
pub(super) struct CallResponse {
    pub headers: Option<HeaderMap>,
    pub body: Vec<u8>,
}

/// Everything the host knows; the `Store`'s data.
#[derive(Default)]
pub(super) struct HostState {
    pub memory: Option<Memory>,
    pub allocate: Option<TypedFunc<u32, u32>>,
    pub plugin_config: Vec<u8>,
    pub clock_nanos: u64,
    pub logs: Vec<LogLine>,
    pub wasi_output: Vec<u8>,
    /// Metric id = index.
    pub metrics: Vec<(String, u32, u64)>,
    pub tick_period_ms: u32,
    /// Live streams by context id.
    pub streams: BTreeMap<u32, Stream>,
    /// Dispatched, not yet answered.
    pub calls: Vec<HttpCall>,
    pub next_token: u32,
    /// When set, `proxy_http_call` fails with BadArgument, as Envoy does for an unknown cluster.
    pub fail_dispatch: bool,
    pub call_response: Option<CallResponse>,
    pub live_contexts: BTreeSet<u32>,
    pub effective_context: u32,
    /// ABI misuse that Envoy would tolerate but that is a filter bug (see `FilterVm::violations`).
    pub violations: Vec<String>,
    /// proxy-wasm shared data: value and CAS token per key (Envoy never deletes a key).
    pub shared_data: BTreeMap<String, (Vec<u8>, u32)>,
    pub next_cas: u32,
    /// The trailers of the last response that had some, as the client gets them.
    pub last_trailers: Option<HeaderMap>,
}

impl HostState {
    /// The stream of the effective context (none for the root context).
    pub fn stream(&self) -> Result<&Stream, Status> {
        self.streams
            .get(&self.effective_context)
            .ok_or(Status::BadArgument)
    }

    pub fn stream_mut(&mut self) -> Result<&mut Stream, Status> {
        self.streams
            .get_mut(&self.effective_context)
            .ok_or(Status::BadArgument)
    }

    fn map(&self, map_type: u32) -> Result<&HeaderMap, Status> {
        match map_type {
            0 => Ok(&self.stream()?.request_headers),
            2 => self
                .stream()?
                .response_headers
                .as_ref()
                .ok_or(Status::BadArgument),
            3 => self
                .stream()?
                .response_trailers
                .as_ref()
                .ok_or(Status::BadArgument),
            6 => self
                .call_response
                .as_ref()
                .and_then(|r| r.headers.as_ref())
                .ok_or(Status::BadArgument),
            // Request trailers and gRPC metadata never exist here; Envoy answers BadArgument for a map
            // it does not currently have.
            _ => Err(Status::BadArgument),
        }
    }

    fn map_mut(&mut self, map_type: u32) -> Result<&mut HeaderMap, Status> {
        match map_type {
            0 => Ok(&mut self.stream_mut()?.request_headers),
            2 => self
                .stream_mut()?
                .response_headers
                .as_mut()
                .ok_or(Status::BadArgument),
            3 => self
                .stream_mut()?
                .response_trailers
                .as_mut()
                .ok_or(Status::BadArgument),
            _ => Err(Status::BadArgument),
        }
    }
}

type Ctx<'a> = Caller<'a, HostState>;

fn memory(caller: &Ctx<'_>) -> Result<Memory, Fail> {
    caller
        .data()
        .memory
        .ok_or_else(|| Fail::Trap(wasmtime::Error::msg("the module exports no memory")))
}

fn read(caller: &Ctx<'_>, ptr: u32, len: u32) -> Result<Vec<u8>, Fail> {
    if len == 0 {
        return Ok(Vec::new());
    }
    let data = memory(caller)?.data(caller);
    let start = ptr as usize;
    let bytes = start
        .checked_add(len as usize)
        .and_then(|end| data.get(start..end))
        .ok_or(Status::InvalidMemoryAccess)?;
    Ok(bytes.to_vec())
}

fn read_string(caller: &Ctx<'_>, ptr: u32, len: u32) -> Result<String, Fail> {
    String::from_utf8(read(caller, ptr, len)?).map_err(|_| Fail::Status(Status::BadArgument))
}

fn write(caller: &mut Ctx<'_>, ptr: u32, bytes: &[u8]) -> Result<(), Fail> {
    memory(caller)?
        .write(caller, ptr as usize, bytes)
        .map_err(|_| Fail::Status(Status::InvalidMemoryAccess))
}

fn write_u32(caller: &mut Ctx<'_>, ptr: u32, value: u32) -> Result<(), Fail> {
    write(caller, ptr, &value.to_le_bytes())
}

/// Hands `bytes` to the guest: allocates with the guest's allocator, copies, and stores the
/// pointer and size at `ptr_ptr` / `size_ptr`. Empty data is (null, 0), as in Envoy.
fn copy_out(caller: &mut Ctx<'_>, bytes: &[u8], ptr_ptr: u32, size_ptr: u32) -> Result<(), Fail> {
    let mut ptr = 0;
    if !bytes.is_empty() {
        let allocate =
            caller.data().allocate.clone().ok_or_else(|| {
                Fail::Trap(wasmtime::Error::msg("the module exports no allocator"))
            })?;
        let len = u32::try_from(bytes.len()).map_err(|_| Fail::Status(Status::BadArgument))?;
        ptr = allocate.call(&mut *caller, len)?;
        if ptr == 0 {
            return Err(Fail::Trap(wasmtime::Error::msg(format!(
                "the guest could not allocate {len} bytes"
            ))));
        }
        write(caller, ptr, bytes)?;
    }
    write_u32(caller, ptr_ptr, ptr)?;
    write_u32(caller, size_ptr, bytes.len() as u32)
}

/// Decodes the ABI's serialised header map: `u32 count`, `count × (u32 name_len, u32
/// value_len)`, then each `name \0 value \0`.
pub(super) fn decode_map(bytes: &[u8]) -> Option<HeaderMap> {
    let word = |at: usize| -> Option<usize> {
        let b = bytes.get(at..at + 4)?;
        Some(u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
    };
    if bytes.is_empty() {
        return Some(HeaderMap::default());
    }
    let count = word(0)?;
    let mut data = 4usize.checked_add(count.checked_mul(8)?)?;
    let mut map = HeaderMap::default();
    for i in 0..count {
        let (name_len, value_len) = (word(4 + i * 8)?, word(8 + i * 8)?);
        let name = bytes.get(data..data + name_len)?;
        data += name_len + 1;
        let value = bytes.get(data..data + value_len)?;
        data += value_len + 1;
        map.append(std::str::from_utf8(name).ok()?, value);
    }
    Some(map)
}

/// The inverse of [`decode_map`].
pub(super) fn encode_map(map: &HeaderMap) -> Vec<u8> {
    let mut out = (map.len() as u32).to_le_bytes().to_vec();
    for (name, value) in map.iter() {
        out.extend_from_slice(&(name.len() as u32).to_le_bytes());
        out.extend_from_slice(&(value.len() as u32).to_le_bytes());
    }
    for (name, value) in map.iter() {
        out.extend_from_slice(name.as_bytes());
        out.push(0);
        out.extend_from_slice(value);
        out.push(0);
    }
    out
}

fn violation(caller: &mut Ctx<'_>, what: String) {
    caller.data_mut().violations.push(what);
}

/// Defines every host function this host implements. Imports not defined here are linked to
/// trapping stubs by the caller (`wasm_host::host`).
pub(super) fn define(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    define_env(linker)?;
    define_maps(linker)?;
    define_http(linker)?;
    define_shared_data(linker)?;
    define_wasi(linker)
}

/// Shared data as Envoy keeps it: a CAS token per write; a write with a non-zero CAS that is
/// not the current one is refused with CasMismatch; a key is never deleted.
fn define_shared_data(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    const CAS_MISMATCH: u32 = 8;
    linker.func_wrap(
        "env",
        "proxy_get_shared_data",
        |mut caller: Ctx<'_>, kp: u32, kl: u32, ptr_ptr: u32, size_ptr: u32, cas_ptr: u32| {
            status((|| {
                let key = read_string(&caller, kp, kl)?;
                let (value, cas) = caller
                    .data()
                    .shared_data
                    .get(&key)
                    .cloned()
                    .ok_or(Status::NotFound)?;
                copy_out(&mut caller, &value, ptr_ptr, size_ptr)?;
                write_u32(&mut caller, cas_ptr, cas)
            })())
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_set_shared_data",
        |mut caller: Ctx<'_>, kp: u32, kl: u32, vp: u32, vl: u32, cas: u32| {
            let result = (|| {
                let key = read_string(&caller, kp, kl)?;
                let value = read(&caller, vp, vl)?;
                let state = caller.data_mut();
                if let Some((_, current)) = state.shared_data.get(&key)
                    && cas != 0
                    && cas != *current
                {
                    return Ok(false);
                }
                state.next_cas += 1;
                let token = state.next_cas;
                state.shared_data.insert(key, (value, token));
                Ok::<bool, Fail>(true)
            })();
            match result {
                Ok(true) => Ok(Status::Ok as u32),
                Ok(false) => Ok(CAS_MISMATCH),
                Err(err) => status(Err(err)),
            }
        },
    )?;
    Ok(())
}

fn define_env(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    linker.func_wrap(
        "env",
        "proxy_log",
        |mut caller: Ctx<'_>, level: u32, ptr: u32, len: u32| {
            status((|| {
                let message = String::from_utf8_lossy(&read(&caller, ptr, len)?).into_owned();
                let level = LogLevel::from_abi(level).ok_or(Status::BadArgument)?;
                caller.data_mut().logs.push(LogLine { level, message });
                Ok(())
            })())
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_get_current_time_nanoseconds",
        |mut caller: Ctx<'_>, ptr: u32| {
            let now = caller.data().clock_nanos;
            status(write(&mut caller, ptr, &now.to_le_bytes()))
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_set_tick_period_milliseconds",
        |mut caller: Ctx<'_>, period: u32| {
            // Envoy keeps the tick per root context; a filter that sets it from a stream
            // context relies on how Envoy maps that, so the host insists on the root.
            if caller.data().effective_context != super::ROOT_CONTEXT {
                violation(&mut caller, "tick period set from a stream context".into());
            }
            caller.data_mut().tick_period_ms = period;
            Ok(Status::Ok as u32)
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_set_effective_context",
        |mut caller: Ctx<'_>, context: u32| {
            if !caller.data().live_contexts.contains(&context) {
                return Ok(Status::BadArgument as u32);
            }
            caller.data_mut().effective_context = context;
            Ok(Status::Ok as u32)
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_get_buffer_bytes",
        |mut caller: Ctx<'_>, kind: u32, start: u32, max: u32, ptr_ptr: u32, size_ptr: u32| {
            status((|| {
                let state = caller.data();
                let buffer = match kind {
                    // Plugin configuration (the VM configuration is empty in our tests).
                    7 => state.plugin_config.clone(),
                    6 => Vec::new(),
                    // Call response body: only while on_http_call_response runs.
                    4 => match &state.call_response {
                        Some(response) => response.body.clone(),
                        None => return Err(Status::NotFound.into()),
                    },
                    0..=8 => return Err(Status::NotFound.into()),
                    _ => return Err(Status::BadArgument.into()),
                };
                let start = start as usize;
                if start > buffer.len() {
                    return Err(Status::BadArgument.into());
                }
                let end = buffer.len().min(start.saturating_add(max as usize));
                // Envoy writes nothing for an empty slice: the SDK then sees a null pointer.
                if end > start {
                    copy_out(&mut caller, &buffer[start..end], ptr_ptr, size_ptr)?;
                }
                Ok(())
            })())
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_get_property",
        |mut caller: Ctx<'_>, path_ptr: u32, path_len: u32, ptr_ptr: u32, size_ptr: u32| {
            status((|| {
                // The path's segments are separated by NUL bytes.
                let path = read(&caller, path_ptr, path_len)?;
                let value = match path.as_slice() {
                    b"source\0address" => caller.data().stream()?.source_address.clone(),
                    _ => None,
                };
                let value = value.ok_or(Status::NotFound)?;
                copy_out(&mut caller, value.as_bytes(), ptr_ptr, size_ptr)
            })())
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_define_metric",
        |mut caller: Ctx<'_>, kind: u32, name_ptr: u32, name_len: u32, id_ptr: u32| {
            status((|| {
                if kind > 2 {
                    return Err(Status::BadArgument.into());
                }
                let name = read_string(&caller, name_ptr, name_len)?;
                let metrics = &mut caller.data_mut().metrics;
                let id = match metrics
                    .iter()
                    .position(|(n, k, _)| *n == name && *k == kind)
                {
                    Some(id) => id,
                    None => {
                        metrics.push((name, kind, 0));
                        metrics.len() - 1
                    }
                };
                write_u32(&mut caller, id_ptr, id as u32)
            })())
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_increment_metric",
        |mut caller: Ctx<'_>, id: u32, offset: i64| {
            let Some((_, kind, value)) = caller.data_mut().metrics.get_mut(id as usize) else {
                return Ok(Status::NotFound as u32);
            };
            // Envoy: counters only go up (offset > 0), gauges both ways, histograms never.
            let new = match *kind {
                0 if offset > 0 => value.checked_add(offset as u64),
                1 => value.checked_add_signed(offset),
                _ => None,
            };
            match new {
                Some(v) => {
                    *value = v;
                    Ok(Status::Ok as u32)
                }
                None => Ok(Status::BadArgument as u32),
            }
        },
    )?;
    Ok(())
}

fn define_maps(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    linker.func_wrap(
        "env",
        "proxy_get_header_map_value",
        |mut caller: Ctx<'_>, map: u32, key_ptr: u32, key_len: u32, ptr_ptr: u32, size_ptr: u32| {
            status((|| {
                let key = read_string(&caller, key_ptr, key_len)?;
                let value = caller.data().map(map)?.get_bytes(&key).map(<[u8]>::to_vec);
                let value = value.ok_or(Status::NotFound)?;
                copy_out(&mut caller, &value, ptr_ptr, size_ptr)
            })())
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_get_header_map_pairs",
        |mut caller: Ctx<'_>, map: u32, ptr_ptr: u32, size_ptr: u32| {
            status((|| {
                let bytes = encode_map(caller.data().map(map)?);
                copy_out(&mut caller, &bytes, ptr_ptr, size_ptr)
            })())
        },
    )?;
    // add / replace / remove share one shape; `op` says which.
    for (name, op) in [
        ("proxy_add_header_map_value", MapOp::Add),
        ("proxy_replace_header_map_value", MapOp::Replace),
    ] {
        linker.func_wrap(
            "env",
            name,
            move |mut caller: Ctx<'_>, map: u32, kp: u32, kl: u32, vp: u32, vl: u32| {
                status((|| {
                    let key = read_string(&caller, kp, kl)?;
                    let value = read(&caller, vp, vl)?;
                    let headers = caller.data_mut().map_mut(map)?;
                    match op {
                        MapOp::Add => headers.append(&key, &value),
                        MapOp::Replace => headers.replace(&key, &value),
                    }
                    Ok(())
                })())
            },
        )?;
    }
    linker.func_wrap(
        "env",
        "proxy_remove_header_map_value",
        |mut caller: Ctx<'_>, map: u32, key_ptr: u32, key_len: u32| {
            status((|| {
                let key = read_string(&caller, key_ptr, key_len)?;
                caller.data_mut().map_mut(map)?.remove(&key);
                Ok(())
            })())
        },
    )?;
    Ok(())
}

#[derive(Clone, Copy)]
enum MapOp {
    Add,
    Replace,
}

fn define_http(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    linker.func_wrap(
        "env",
        "proxy_http_call",
        |mut caller: Ctx<'_>,
         up_ptr: u32,
         up_len: u32,
         h_ptr: u32,
         h_len: u32,
         b_ptr: u32,
         b_len: u32,
         t_ptr: u32,
         t_len: u32,
         timeout_ms: u32,
         token_ptr: u32| {
            status((|| {
                let cluster = read_string(&caller, up_ptr, up_len)?;
                let headers =
                    decode_map(&read(&caller, h_ptr, h_len)?).ok_or(Status::ParseFailure)?;
                let body = read(&caller, b_ptr, b_len)?;
                let trailers =
                    decode_map(&read(&caller, t_ptr, t_len)?).ok_or(Status::ParseFailure)?;
                // Envoy refuses a call without these synchronously (BadArgument). It is always a
                // filter bug, so it is also reported as a violation.
                let missing: Vec<&str> = [":method", ":path", ":authority"]
                    .into_iter()
                    .filter(|h| headers.get_bytes(h).is_none_or(<[u8]>::is_empty))
                    .collect();
                if !missing.is_empty() {
                    violation(&mut caller, format!("proxy_http_call without {missing:?}"));
                    return Err(Status::BadArgument.into());
                }
                if caller.data().fail_dispatch {
                    return Err(Status::BadArgument.into());
                }
                let state = caller.data_mut();
                state.next_token += 1;
                let token = state.next_token;
                state.calls.push(HttpCall {
                    token,
                    context: state.effective_context,
                    cluster,
                    headers,
                    body,
                    trailers,
                    timeout: Duration::from_millis(u64::from(timeout_ms)),
                });
                write_u32(&mut caller, token_ptr, token)
            })())
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_continue_stream",
        |mut caller: Ctx<'_>, stream_type: u32| {
            if stream_type != 0 {
                // Only request resumption is modelled; the filter never pauses responses.
                return Ok(Status::BadArgument as u32);
            }
            let Ok(stream) = caller.data_mut().stream_mut() else {
                return Ok(Status::BadArgument as u32);
            };
            let problem = if stream.local_response.is_some() {
                Some("continue_stream after send_local_response")
            } else if !stream.paused {
                Some("continue_stream on a request that is not paused")
            } else {
                None
            };
            stream.paused = false;
            stream.forwarded = stream.local_response.is_none();
            if let Some(problem) = problem {
                violation(&mut caller, problem.to_string());
            }
            Ok(Status::Ok as u32)
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_send_local_response",
        |mut caller: Ctx<'_>,
         status_code: u32,
         d_ptr: u32,
         d_len: u32,
         b_ptr: u32,
         b_len: u32,
         h_ptr: u32,
         h_len: u32,
         grpc_status: i32| {
            status((|| {
                let details = String::from_utf8_lossy(&read(&caller, d_ptr, d_len)?).into_owned();
                let body = read(&caller, b_ptr, b_len)?;
                let headers =
                    decode_map(&read(&caller, h_ptr, h_len)?).ok_or(Status::ParseFailure)?;
                let stream = caller.data().stream()?;
                if stream.local_response.is_some() || stream.forwarded {
                    violation(
                        &mut caller,
                        "send_local_response on a decided request".into(),
                    );
                }
                let stream = caller.data_mut().stream_mut()?;
                stream.paused = false;
                stream.local_response = Some(LocalResponse {
                    status: status_code,
                    details,
                    headers,
                    body,
                    grpc_status,
                });
                Ok(())
            })())
        },
    )?;
    Ok(())
}

fn define_wasi(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    const WASI: &str = "wasi_snapshot_preview1";
    const ERRNO_SUCCESS: u32 = 0;
    const ERRNO_BADF: u32 = 8;
    const ERRNO_FAULT: u32 = 21;
    // No environment: both counts are zero, and there is nothing to copy.
    linker.func_wrap(
        WASI,
        "environ_sizes_get",
        |mut caller: Ctx<'_>, count_ptr: u32, size_ptr: u32| {
            let ok = write_u32(&mut caller, count_ptr, 0)
                .and_then(|()| write_u32(&mut caller, size_ptr, 0));
            Ok(if ok.is_ok() {
                ERRNO_SUCCESS
            } else {
                ERRNO_FAULT
            })
        },
    )?;
    linker.func_wrap(WASI, "environ_get", |_: Ctx<'_>, _: u32, _: u32| {
        Ok(ERRNO_SUCCESS)
    })?;
    // stdout/stderr are collected (the SDK logs panics through proxy_log, but std may write).
    linker.func_wrap(
        WASI,
        "fd_write",
        |mut caller: Ctx<'_>, fd: u32, iovs: u32, iovs_len: u32, written_ptr: u32| {
            if fd != 1 && fd != 2 {
                return Ok(ERRNO_BADF);
            }
            let result = (|| {
                let mut out = Vec::new();
                for i in 0..iovs_len {
                    let iov = read(&caller, iovs + i * 8, 8)?;
                    let ptr = u32::from_le_bytes([iov[0], iov[1], iov[2], iov[3]]);
                    let len = u32::from_le_bytes([iov[4], iov[5], iov[6], iov[7]]);
                    out.extend(read(&caller, ptr, len)?);
                }
                write_u32(&mut caller, written_ptr, out.len() as u32)?;
                caller.data_mut().wasi_output.extend(out);
                Ok::<(), Fail>(())
            })();
            match result {
                Ok(()) => Ok(ERRNO_SUCCESS),
                Err(Fail::Trap(err)) => Err(err),
                Err(Fail::Status(_)) => Ok(ERRNO_FAULT),
            }
        },
    )?;
    // Both clocks are the host's test clock (it only moves when a test moves it).
    linker.func_wrap(
        WASI,
        "clock_time_get",
        |mut caller: Ctx<'_>, id: u32, _precision: u64, time_ptr: u32| {
            const ERRNO_INVAL: u32 = 28;
            if id > 1 {
                return Ok(ERRNO_INVAL);
            }
            let now = caller.data().clock_nanos;
            Ok(match write(&mut caller, time_ptr, &now.to_le_bytes()) {
                Ok(()) => ERRNO_SUCCESS,
                Err(_) => ERRNO_FAULT,
            })
        },
    )?;
    // Deterministic "randomness": tests need reproducible runs, not secrecy.
    linker.func_wrap(
        WASI,
        "random_get",
        |mut caller: Ctx<'_>, ptr: u32, len: u32| {
            let bytes: Vec<u8> = (0..len)
                .map(|i| (i as u8).wrapping_mul(31) ^ 0xa5)
                .collect();
            Ok(match write(&mut caller, ptr, &bytes) {
                Ok(()) => ERRNO_SUCCESS,
                Err(_) => ERRNO_FAULT,
            })
        },
    )?;
    // proc_exit never returns: the instance is finished, which for a filter is a dead VM.
    linker.func_wrap(
        WASI,
        "proc_exit",
        |_: Ctx<'_>, code: u32| -> wasmtime::Result<()> {
            Err(wasmtime::Error::msg(format!(
                "the guest called proc_exit({code})"
            )))
        },
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_maps_round_trip_in_the_abi_encoding() {
        let mut map = HeaderMap::from_pairs(&[(":status", "200"), ("x-a", "")]);
        map.append("X-B", b"\xff\x00v".as_slice());
        let bytes = encode_map(&map);
        // count, two lengths per entry, then NUL-terminated names and values.
        assert_eq!(&bytes[..4], &3u32.to_le_bytes());
        assert_eq!(
            bytes.len(),
            4 + 3 * 8 + (7 + 1 + 3 + 1) + (3 + 1 + 1) + (3 + 1 + 3 + 1)
        );
        assert_eq!(decode_map(&bytes), Some(map));
        assert_eq!(decode_map(&[]), Some(HeaderMap::default()));
    }

    #[test]
    fn truncated_or_absurd_maps_are_refused() {
        let bytes = encode_map(&HeaderMap::from_pairs(&[("name", "value")]));
        for cut in 1..bytes.len() - 1 {
            assert_eq!(decode_map(&bytes[..cut]), None, "cut at {cut}");
        }
        assert_eq!(decode_map(&u32::MAX.to_le_bytes()), None);
    }
}
