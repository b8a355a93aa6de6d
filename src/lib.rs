//! sheave
