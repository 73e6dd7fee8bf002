//! Runs the named scenarios with every algorithm and prints one table
//! each: `cargo run --release -p loadbalance-simulate -- [linkerd|prequal|demo|overload|all] [seed]`.
//! The overload table runs least-connections behind each limit, at half
//! and twice the servers' capacity.

use std::process::ExitCode;

use loadbalance_simulate::{overload_table, scenarios, simulate, table};

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let which = args.next().unwrap_or_else(|| "all".to_owned());
    let seed = match args.next().map(|s| s.parse::<u64>()) {
        None => 1,
        Some(Ok(seed)) => seed,
        Some(Err(_)) => {
            eprintln!("the seed is a number");
            return ExitCode::FAILURE;
        }
    };
    let prequal: Vec<_> = scenarios::PREQUAL_LOADS
        .iter()
        .map(|&load| scenarios::prequal(load, seed))
        .collect();
    let all = [
        ("linkerd", vec![scenarios::linkerd(seed)]),
        ("prequal", prequal),
        ("demo", vec![scenarios::demo(seed)]),
    ];
    let chosen: Vec<_> = all
        .into_iter()
        .filter(|(name, _)| which == "all" || which == *name)
        .collect();
    if chosen.is_empty() && which != "overload" {
        eprintln!("{which:?}: linkerd, prequal, demo, overload or all");
        return ExitCode::FAILURE;
    }
    for (_, group) in chosen {
        let mut reports = Vec::new();
        for scenario in &group {
            for algorithm in scenarios::ALGORITHMS {
                match simulate(scenario, algorithm) {
                    Ok(report) => reports.push(report),
                    Err(error) => {
                        eprintln!("{algorithm}: {error}");
                        return ExitCode::FAILURE;
                    }
                }
            }
        }
        println!("{}", table(&reports));
    }
    if which == "all" || which == "overload" {
        match overload(seed) {
            Ok(printed) => println!("{printed}"),
            Err(error) => {
                eprintln!("overload: {error}");
                return ExitCode::FAILURE;
            }
        }
    }
    ExitCode::SUCCESS
}

/// The overload table: each limit at half the capacity (the unloaded
/// p99 is the run without a limit there) and at twice it.
fn overload(seed: u64) -> Result<String, loadbalance_simulate::SimulateError> {
    let unloaded = simulate(
        &scenarios::overload(0.5, "no limit", loadbalance_simulate::Limit::None, seed),
        "least_conn",
    )?;
    let mut reports = Vec::new();
    for load in [0.5, 2.0] {
        for (label, limit) in scenarios::overload_limits() {
            reports.push(simulate(
                &scenarios::overload(load, label, limit, seed),
                "least_conn",
            )?);
        }
    }
    Ok(overload_table(
        &reports,
        scenarios::overload_capacity(),
        unloaded.p99,
    ))
}
