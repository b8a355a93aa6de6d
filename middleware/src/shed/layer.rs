//! [`LoadShedLayer`].

use sheave_service::Layer;

use super::LoadShed;

/// Wraps services in a [`LoadShed`].
#[derive(Debug, Clone, Copy, Default)]
pub struct LoadShedLayer;

impl LoadShedLayer {
    /// The layer.
    pub fn new() -> Self {
        LoadShedLayer
    }
}

impl<S> Layer<S> for LoadShedLayer {
    type Service = LoadShed<S>;

    fn layer(&self, inner: S) -> LoadShed<S> {
        LoadShed::new(inner)
    }
}
