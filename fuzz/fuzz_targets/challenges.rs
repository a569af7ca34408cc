//! Fuzz target `challenges`: see [`mmaudit_fuzz::targets::challenges`].
#![cfg_attr(fuzzing, no_main)]

#[cfg(fuzzing)]
libfuzzer_sys::fuzz_target!(|data: &[u8]| mmaudit_fuzz::targets::challenges(data));

#[cfg(not(fuzzing))]
fn main() -> std::process::ExitCode {
    mmaudit_fuzz::driver::main("challenges", mmaudit_fuzz::targets::challenges)
}
