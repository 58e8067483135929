#![no_main]
//! See `rl_fuzz::check` and the README for the input format.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    rl_fuzz::filter::check_response(data);
});
