//! `p2pd-bench`: the VoD load generator (see `p2pd::bench`).

fn main() {
    std::process::exit(p2pd::bench::main());
}
