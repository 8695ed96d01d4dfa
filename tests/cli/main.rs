//! The `pooldump` command line end to end: one test binary (`cargo test
//! --test cli`), one module a subject, each running the built binary
//! (`CARGO_BIN_EXE_pooldump`) against kit machines, the bundled sample,
//! the simulated KDNET target and real third-party files. One binary links
//! once instead of once a subject; its tests share one process and run on
//! parallel threads, so none may change process-wide state (environment,
//! current directory) or use a fixed port or path (each takes its own
//! temporary directory and a free port).
//!
//! Run one subject with `cargo test --test cli analyze_cli::`. The tests of
//! the libraries alone live beside their crates (`crates/*/tests`).

#[path = "../support/mod.rs"]
mod support;

// Commands on dumps.
mod analyze_cli;
mod batch_fleet;
mod callsites_cli;
mod find_bytes;
mod find_cli;
mod hittag_cli;
mod pool_cli;
mod relabel_offline;
mod small_dump;
mod snapshot_cli;
mod stack_cli;
mod text_import;
mod trend_series;

// Symbols: the symbol path, stores and servers as the CLI uses them.
mod pooltag_real;
mod symbols_cli;

// Live targets over KDNET (the simulated target in this process).
mod analyze_kdnet;
mod kdnet_cli;
mod kdnet_mishaps;
mod kdnet_netem;
mod relabel_live;
mod snapshot_live;
mod top_tmux;

// Bad input and the user's first steps.
mod cli_errors;
mod first_hour;
mod hazards;
mod hostile_input;
mod readme;

// Against independent tools: Volatility 3, the Python bindings.
mod python_bindings;
mod volatility_bigpools;

/// The launcher `support::run_measured` re-runs this binary as (a no-op
/// otherwise): at the crate root, so that `--exact measure_launcher` names
/// it whichever module measures.
#[cfg(target_os = "linux")]
#[test]
fn measure_launcher() {
    support::measure_launcher_main();
}
