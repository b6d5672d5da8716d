//! Benchmarks of trove-netiso, run with `cargo bench -p netiso-benches` as root. Each one
//! measures our native path beside the same work done with iproute2 (`ip`) in the same run and
//! prints the ratio. See `benches/isolation.rs`.
