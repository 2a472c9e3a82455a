use clap::Parser;

fn main() -> std::process::ExitCode {
    capstan::cli::main(capstan::cli::Cli::parse())
}
