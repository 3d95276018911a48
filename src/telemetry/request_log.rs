//! Request logs (placeholder).
