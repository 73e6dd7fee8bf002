//! Runs the named scenarios with every algorithm and prints one table
//! each: `cargo run --release -p loadbalance-simulate -- [linkerd|demo|all] [seed]`.

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
    let all = [
        ("linkerd", scenarios::linkerd(seed)),
        ("demo", scenarios::demo(seed)),
    ];
    let chosen: Vec<_> = all
        .into_iter()
        .filter(|(name, _)| which == "all" || which == *name)
        .collect();
    if chosen.is_empty() {
        eprintln!("{which:?}: linkerd, demo or all");
        return ExitCode::FAILURE;
    }
    for (_, scenario) in chosen {
        let mut reports = Vec::new();
        for algorithm in scenarios::ALGORITHMS {
            match simulate(&scenario, algorithm) {
                Ok(report) => reports.push(report),
                Err(error) => {
                    eprintln!("{algorithm}: {error}");
                    return ExitCode::FAILURE;
                }
            }
        }
        println!("{}", table(&reports));
    }
    ExitCode::SUCCESS
}
