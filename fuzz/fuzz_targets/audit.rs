//! Fuzz target `audit`: see [`mmaudit_fuzz::targets::audit`].
#![cfg_attr(fuzzing, no_main)]

#[cfg(fuzzing)]
libfuzzer_sys::fuzz_target!(|data: &[u8]| mmaudit_fuzz::targets::audit(data));

#[cfg(not(fuzzing))]
fn main() -> std::process::ExitCode {
    mmaudit_fuzz::driver::main("audit", mmaudit_fuzz::targets::audit)
}
