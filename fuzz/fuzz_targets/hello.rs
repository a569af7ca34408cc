//! Fuzz target `hello`: see [`mmaudit_fuzz::targets::hello`].
#![cfg_attr(fuzzing, no_main)]

#[cfg(fuzzing)]
libfuzzer_sys::fuzz_target!(|data: &[u8]| mmaudit_fuzz::targets::hello(data));

#[cfg(not(fuzzing))]
fn main() -> std::process::ExitCode {
    mmaudit_fuzz::driver::main("hello", mmaudit_fuzz::targets::hello)
}
