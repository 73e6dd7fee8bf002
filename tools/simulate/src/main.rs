//! Runs the named scenarios with every algorithm and prints one table
//! each: `cargo run --release -p loadbalance-simulate -- [linkerd|prequal|demo|all] [seed]`.

use std::process::ExitCode;

use loadbalance_simulate::{scenarios, simulate, table};

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
    if chosen.is_empty() {
        eprintln!("{which:?}: linkerd, prequal, demo or all");
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
    ExitCode::SUCCESS
}
