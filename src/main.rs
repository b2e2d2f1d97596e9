use clap::Parser;
use ferrovol::cli::{crd, ctl, devices, nodeloss, serve, Cli, Command};

fn main() {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve(args) => serve::run(*args),
        Command::Ctl(args) => ctl::run(args),
        Command::Devices(args) => devices::run(args),
        Command::Crd => crd::run(),
        Command::NodeLoss(args) => nodeloss::run(args),
    };
    if let Err(e) = result {
        eprintln!("ferrovol: {e}");
        std::process::exit(1);
    }
}
