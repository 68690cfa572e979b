//! Rendering: the render queue (and, beside it, the browser pool and one
//! page render).

pub mod queue;
