//! `heisen-guest NAME ARGS...`: runs one of the guest programs (`{fixture}` in scenarios).

fn main() {
    std::process::exit(heisen_guests::run(std::env::args().skip(1).collect()));
}
