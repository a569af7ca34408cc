//! Fuzz target `stream`: see [`mmaudit_fuzz::targets::stream`].
#![cfg_attr(fuzzing, no_main)]

#[cfg(fuzzing)]
libfuzzer_sys::fuzz_target!(|data: &[u8]| mmaudit_fuzz::targets::stream(data));

#[cfg(not(fuzzing))]
fn main() -> std::process::ExitCode {
    mmaudit_fuzz::driver::main("stream", mmaudit_fuzz::targets::stream)
}
