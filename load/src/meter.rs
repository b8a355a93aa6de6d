//! The overhead meter: what a layer costs per call.
