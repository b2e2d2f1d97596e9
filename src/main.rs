use clap::Parser;
use ferrovol::cli::{crd, ctl, devices, serve, Cli, Command};

fn main() {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve(args) => serve::run(*args),
        Command::Ctl(args) => ctl::run(args),
        Command::Devices(args) => devices::run(args),
        Command::Crd => crd::run(),
    };
    if let Err(e) = result {
        eprintln!("ferrovol: {e}");
        std::process::exit(1);
    }
}
