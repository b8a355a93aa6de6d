//! Modules shared by the examples (and by the integration tests, which include them by path).

pub mod chaos;
pub mod cluster;
pub mod kv;
pub mod openloop;
