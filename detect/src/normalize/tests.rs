//! Registry, envelope and detection tests.
