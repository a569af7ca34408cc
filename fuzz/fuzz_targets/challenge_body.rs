//! Fuzz target `challenge_body`: see [`mmaudit_fuzz::targets::challenge_body`].
#![cfg_attr(fuzzing, no_main)]

#[cfg(fuzzing)]
libfuzzer_sys::fuzz_target!(|data: &[u8]| mmaudit_fuzz::targets::challenge_body(data));

#[cfg(not(fuzzing))]
fn main() -> std::process::ExitCode {
    mmaudit_fuzz::driver::main("challenge_body", mmaudit_fuzz::targets::challenge_body)
}
