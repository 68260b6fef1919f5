//! syncgen's deterministic fault simulation. The simulation itself is the test
//! `tests/simulation.rs`; see its documentation for the fault model, the invariants and
//! the variables that choose seeds (`SYNC_SIM_SEEDS`, `SYNC_SIM_SEED`, `SYNC_SIM_FIRST`,
//! `SYNC_SIM_PG_SEEDS`, `SYNC_SIM_THREADS`).
