//! Conformance tests per spec section (filled below).
