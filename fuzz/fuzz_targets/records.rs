//! Fuzz target `records`: see [`mmaudit_fuzz::targets::records`].
#![cfg_attr(fuzzing, no_main)]

#[cfg(fuzzing)]
libfuzzer_sys::fuzz_target!(|data: &[u8]| mmaudit_fuzz::targets::records(data));

#[cfg(not(fuzzing))]
fn main() -> std::process::ExitCode {
    mmaudit_fuzz::driver::main("records", mmaudit_fuzz::targets::records)
}
