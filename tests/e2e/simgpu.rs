//! The simulated GPU, tested the way a user's program uses it: C programs in
//! `tests/programs` are compiled with the system `cc` against the libraries
//! `scripts/simgpu.sh` builds, run with `LD_LIBRARY_PATH`, and check themselves
//! against f64 references (printing PASS/FAIL per case). These tests assert on
//! their exit status and output, and on how `SIMGPU_FAULT`, `SIMGPU_SPLITK`
//! and `SIMGPU_LATENCY_US` change what they see.

use mmaudit_tests::simgpu::{compile, libraries, repo_root, run, Run};

fn assert_all_pass(r: &Run, min_cases: usize) {
    assert_eq!(r.code, Some(0), "{}", r.transcript());
    assert!(r.failures().is_empty(), "{}", r.transcript());
    assert!(
        r.passes() >= min_cases,
        "only {} cases ran\n{}",
        r.passes(),
        r.transcript()
    );
    assert!(r.stdout.contains(", 0 failed"), "{}", r.transcript());
}

fn assert_fails(r: &Run) {
    assert_eq!(r.code, Some(1), "{}", r.transcript());
    assert!(!r.failures().is_empty(), "{}", r.transcript());
}

#[test]
fn script_builds_the_sonamed_libraries_and_prints_their_directory() {
    let libs = libraries();
    for name in [
        "libcudart.so.13",
        "libcuda.so.1",
        "libcublas.so.13",
        "libcublasLt.so.13",
        "libcudart.so",
        "libcuda.so",
        "libcublas.so",
        "libcublasLt.so",
        "libsimgpu.so",
    ] {
        assert!(
            libs.lib_dir.join(name).exists(),
            "{name} missing in {}",
            libs.lib_dir.display()
        );
    }
    assert!(libs.lib_dir.is_absolute());
    assert!(libs.include_dir.join("cublasLt.h").exists());
}

#[test]
fn cublas_gemm_entry_points_match_the_f64_reference() {
    let r = run(&compile("simgpu_gemm"), &[], &[]);
    assert_all_pass(&r, 800);
}

#[test]
fn cublas_gemm_check_catches_a_gpu_that_perturbs_results() {
    // The same program, on a GPU that changes one entry per call by 1%:
    // the comparison against the reference must notice.
    let r = run(
        &compile("simgpu_gemm"),
        &[],
        &[("SIMGPU_FAULT", "perturb:0.01")],
    );
    assert_fails(&r);
    assert!(r.failures().len() > 500, "{}", r.transcript());
}

#[test]
fn cublaslt_matmul_matches_the_f64_reference() {
    let r = run(&compile("simgpu_lt"), &[], &[]);
    assert_all_pass(&r, 250);
}

#[test]
fn cublaslt_check_catches_a_gpu_that_skips_rows() {
    let r = run(&compile("simgpu_lt"), &[], &[("SIMGPU_FAULT", "rows:0.5")]);
    assert_fails(&r);
}

/// Runs the fault program in `mode` under the fault `spec` (None: no fault).
fn faults(mode: &str, param: &str, which: &str, spec: Option<&str>) -> Run {
    let exe = compile("simgpu_faults");
    let env: Vec<(&str, &str)> = spec.map(|s| vec![("SIMGPU_FAULT", s)]).unwrap_or_default();
    run(&exe, &[mode, param, which], &env)
}

/// The fault program on its `normal` table: bf16 GEMMs (cuBLAS, strided
/// batched, cuBLASLt column- and row-major) with N(0,1) data, k = 256 and
/// 4096, whose relative dot-product error it measures and prints.
fn normal_faults(mode: &str, param: &str, which: &str, env: &[(&str, &str)]) -> Run {
    run(
        &compile("simgpu_faults"),
        &[mode, param, which, "normal"],
        env,
    )
}

/// The `relerr call N NAME: X` lines of a normal-table run.
fn relative_errors(r: &Run) -> Vec<&str> {
    r.stdout
        .lines()
        .filter(|l| l.starts_with("relerr"))
        .collect()
}

#[test]
fn honest_gpu_computes_every_call_correctly() {
    assert_all_pass(&faults("none", "0", "all", None), 24);
    let normal = normal_faults("none", "0", "all", &[]);
    assert_all_pass(&normal, 12);
    println!("honest:\n{}", relative_errors(&normal).join("\n"));
}

/// Each mode: present, every call shows exactly the documented change (and
/// the honest check fails); absent, the fault check fails.
fn check_fault_mode(mode: &str, param: &str, spec: &str) {
    assert_all_pass(&faults(mode, param, "all", Some(spec)), 24);
    assert_fails(&faults("none", "0", "all", Some(spec)));
    assert_fails(&faults(mode, param, "all", None));
}

#[test]
fn fault_zero_leaves_zeros() {
    check_fault_mode("zero", "0", "zero");
}

#[test]
fn fault_perturb_changes_one_entry_per_call_by_rel() {
    check_fault_mode("perturb", "0.25", "perturb:0.25");
    check_fault_mode("perturb", "-0.5", "perturb:-0.5");
}

#[test]
fn fault_rows_computes_only_the_first_rows() {
    check_fault_mode("rows", "0.5", "rows:0.5");
}

#[test]
fn fault_weights_perturbs_op_a() {
    check_fault_mode("weights", "0.1", "weights:0.1");
}

#[test]
fn fault_precision_fp8_rounds_inputs_to_e4m3() {
    check_fault_mode("fp8", "0", "precision:fp8");
}

/// A cheaper-arithmetic mode, on both tables: present, every call equals the
/// program's own model of the mode (and on N(0,1) data has a relative error
/// in the mode's range); absent, or present while the program expects an
/// honest GPU, the checks fail. Split-k changes nothing of this.
fn check_cheap_mode(mode: &str, param: &str, spec: &str) {
    check_fault_mode(mode, param, spec);
    let fault = [("SIMGPU_FAULT", spec)];
    let r = normal_faults(mode, param, "all", &fault);
    assert_all_pass(&r, 12);
    assert_eq!(relative_errors(&r).len(), 12, "{}", r.transcript());
    println!("{spec}:\n{}", relative_errors(&r).join("\n"));
    assert_fails(&normal_faults("none", "0", "all", &fault));
    assert_fails(&normal_faults(mode, param, "all", &[]));
    let split = [("SIMGPU_FAULT", spec), ("SIMGPU_SPLITK", "5")];
    assert_all_pass(&normal_faults(mode, param, "all", &split), 12);
    assert_all_pass(
        &run(&compile("simgpu_faults"), &[mode, param, "all"], &split),
        24,
    );
}

#[test]
fn fault_precision_fp8_rowscaled_quantises_rows_and_columns() {
    check_cheap_mode("fp8-rowscaled", "0", "precision:fp8-rowscaled");
    // Not the unscaled fp8 mode, nor int8: the model tells them apart.
    assert_fails(&faults("fp8-rowscaled", "0", "all", Some("precision:fp8")));
    assert_fails(&normal_faults(
        "fp8-rowscaled",
        "0",
        "all",
        &[("SIMGPU_FAULT", "precision:int8-rowscaled")],
    ));
}

#[test]
fn fault_precision_int8_rowscaled_quantises_rows_and_columns() {
    check_cheap_mode("int8-rowscaled", "0", "precision:int8-rowscaled");
    assert_fails(&normal_faults(
        "int8-rowscaled",
        "0",
        "all",
        &[("SIMGPU_FAULT", "precision:fp8-rowscaled")],
    ));
}

#[test]
fn fault_truncate_k_skips_the_last_terms() {
    check_cheap_mode("truncate-k", "0.5", "truncate-k:0.5");
    check_fault_mode("truncate-k", "0.25", "truncate-k:0.25");
    // The program checks how many terms were kept.
    assert_fails(&normal_faults(
        "truncate-k",
        "0.25",
        "all",
        &[("SIMGPU_FAULT", "truncate-k:0.5")],
    ));
    // Keeping every term is honest.
    assert_all_pass(&faults("none", "0", "all", Some("truncate-k:1")), 24);
}

#[test]
fn cheap_faults_leave_integer_gemms_honest_except_truncate_k() {
    // simgpu_gemm covers every type combination; its COMPUTE_32I cases
    // (int8 inputs, integer sums) are named ".../32I".
    let exe = compile("simgpu_gemm");
    for spec in ["precision:fp8-rowscaled", "precision:int8-rowscaled"] {
        let r = run(&exe, &[], &[("SIMGPU_FAULT", spec)]);
        assert_fails(&r);
        assert!(
            !r.failures().iter().any(|l| l.contains("/32I")),
            "{spec} changed an integer GEMM\n{}",
            r.transcript()
        );
        assert!(
            r.stdout
                .lines()
                .any(|l| l.starts_with("PASS") && l.contains("/32I")),
            "{}",
            r.transcript()
        );
    }
    let r = run(&exe, &[], &[("SIMGPU_FAULT", "truncate-k:0.5")]);
    assert!(
        r.failures().iter().any(|l| l.contains("/32I")),
        "truncate-k left integer GEMMs alone\n{}",
        r.transcript()
    );
}

#[test]
fn cheap_faults_follow_after_and_prob() {
    let int8 = "precision:int8-rowscaled,after:6";
    assert_all_pass(
        &normal_faults("int8-rowscaled", "0", "after:6", &[("SIMGPU_FAULT", int8)]),
        12,
    );
    assert_fails(&normal_faults(
        "int8-rowscaled",
        "0",
        "after:5",
        &[("SIMGPU_FAULT", int8)],
    ));
    assert_fails(&normal_faults(
        "int8-rowscaled",
        "0",
        "after:7",
        &[("SIMGPU_FAULT", int8)],
    ));
    assert_all_pass(
        &faults(
            "truncate-k",
            "0.5",
            "after:10",
            Some("truncate-k:0.5,after:10"),
        ),
        24,
    );
    for (mode, param, spec) in [
        ("fp8-rowscaled", "0", "precision:fp8-rowscaled,prob:0.5"),
        ("int8-rowscaled", "0", "precision:int8-rowscaled,prob:0.5"),
        ("truncate-k", "0.5", "truncate-k:0.5,prob:0.5"),
    ] {
        // "some": every call is either faulted as the mode says or honest,
        // and there are both; another seed hits other calls.
        let r = normal_faults(mode, param, "some", &[("SIMGPU_FAULT", spec)]);
        assert_all_pass(&r, 12);
        assert_all_pass(&faults(mode, param, "some", Some(spec)), 24);
        let other_seed = normal_faults(
            mode,
            param,
            "some",
            &[("SIMGPU_FAULT", spec), ("SIMGPU_FAULT_SEED", "99")],
        );
        assert_all_pass(&other_seed, 12);
        assert_ne!(digests(&r), digests(&other_seed), "{spec}");
    }
}

#[test]
fn fault_prob_hits_a_seeded_fraction_of_calls() {
    let spec = "perturb:0.25,prob:0.5";
    let r = faults("perturb", "0.25", "some", Some(spec));
    assert_all_pass(&r, 24);
    // Seeded: the same seed hits the same calls; another seed others.
    let again = faults("perturb", "0.25", "some", Some(spec));
    assert_eq!(r.stdout, again.stdout);
    let exe = compile("simgpu_faults");
    let other = run(
        &exe,
        &["perturb", "0.25", "some"],
        &[("SIMGPU_FAULT", spec), ("SIMGPU_FAULT_SEED", "99")],
    );
    assert_all_pass(&other, 24);
    assert_ne!(r.stdout, other.stdout);
}

#[test]
fn fault_after_spares_the_first_calls() {
    assert_all_pass(
        &faults("perturb", "0.25", "after:10", Some("perturb:0.25,after:10")),
        24,
    );
    assert_fails(&faults(
        "perturb",
        "0.25",
        "after:5",
        Some("perturb:0.25,after:10"),
    ));
}

#[test]
fn bad_fault_spec_refuses_to_start() {
    let r = faults("none", "0", "all", Some("perturb"));
    assert_eq!(r.code, Some(2), "{}", r.transcript());
    assert!(r.stderr.contains("SIMGPU_FAULT"), "{}", r.transcript());
    for spec in [
        "truncate-k:0",
        "truncate-k:1.5",
        "truncate-k:-0.5",
        "truncate-k:nan",
        "truncate-k",
        "precision:fp9",
        "precision:int8",
        "precision:fp8-rowscaled,precision:int8-rowscaled",
    ] {
        let r = faults("none", "0", "all", Some(spec));
        assert_eq!(r.code, Some(2), "{spec}: {}", r.transcript());
        let item = spec.rsplit(',').next().expect("an item");
        assert!(
            r.stderr.contains(&format!("cannot parse '{item}'")),
            "{spec}: {}",
            r.transcript()
        );
    }
}

fn digests(r: &Run) -> Vec<&str> {
    r.stdout
        .lines()
        .filter(|l| l.starts_with("digest"))
        .collect()
}

#[test]
fn splitk_changes_the_last_bits_but_stays_within_tolerance() {
    let exe = compile("simgpu_faults");
    let plain = run(&exe, &["none", "0", "all"], &[]);
    let split = run(&exe, &["none", "0", "all"], &[("SIMGPU_SPLITK", "5")]);
    let again = run(&exe, &["none", "0", "all"], &[("SIMGPU_SPLITK", "5")]);
    assert_all_pass(&plain, 24);
    assert_all_pass(&split, 24);
    assert_ne!(
        digests(&plain),
        digests(&split),
        "split-k changed no result"
    );
    assert_eq!(
        digests(&split),
        digests(&again),
        "split-k is not reproducible"
    );
    // The GEMM matrix still passes under split-k.
    assert_all_pass(
        &run(&compile("simgpu_gemm"), &[], &[("SIMGPU_SPLITK", "3")]),
        800,
    );
}

#[test]
fn work_is_asynchronous_and_ordered_like_a_gpu() {
    let r = run(
        &compile("simgpu_ordering"),
        &[],
        &[("SIMGPU_LATENCY_US", "50000")],
    );
    assert_all_pass(&r, 30);
}

#[test]
fn driver_api_runs_ptx_kernels_through_cpu_twins() {
    let r = run(
        &compile("simgpu_kernel"),
        &[],
        &[("SIMGPU_LATENCY_US", "20000")],
    );
    assert_all_pass(&r, 40);
    assert!(r.stderr.contains("has no CPU twin"), "{}", r.transcript());
}

#[test]
fn graphs_replay_captured_work() {
    let r = run(
        &compile("simgpu_graph"),
        &[],
        &[("SIMGPU_LATENCY_US", "5000")],
    );
    assert_all_pass(&r, 20);
}

#[test]
fn gather_kernel_ptx_runs_through_its_twin_and_matches_the_host() {
    // The committed PTX, loaded as the interposer loads it; every case states
    // what it gathers in matrix terms and is compared with host copies.
    let ptx = repo_root().join("cuda/gather.ptx");
    let r = run(
        &compile("simgpu_gather"),
        &[ptx.to_str().expect("UTF-8 path")],
        &[("SIMGPU_LATENCY_US", "200")],
    );
    assert_all_pass(&r, 50);
    assert!(
        r.stdout
            .contains("synchronising reports the illegal address"),
        "{}",
        r.transcript()
    );
}

#[test]
fn gather_program_loads_the_ptx_it_is_given() {
    // Rename the kernel in a copy of the PTX: the program must not find it,
    // so the test above really ran the committed module's entry.
    let text =
        std::fs::read_to_string(repo_root().join("cuda/gather.ptx")).expect("read cuda/gather.ptx");
    let renamed = text.replace("mmaudit_gather", "mmaudit_renamed");
    let dir = repo_root().join("target/simgpu");
    std::fs::create_dir_all(&dir).expect("create target/simgpu");
    let path = dir.join(format!("gather-renamed.{}.ptx", std::process::id()));
    std::fs::write(&path, renamed).expect("write the renamed PTX");
    let r = run(
        &compile("simgpu_gather"),
        &[path.to_str().expect("UTF-8 path")],
        &[],
    );
    let _ = std::fs::remove_file(&path);
    assert_eq!(r.code, Some(2), "{}", r.transcript());
    assert!(
        r.stdout.contains("cuModuleGetFunction"),
        "{}",
        r.transcript()
    );
}
