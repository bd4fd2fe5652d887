//! Runner tests with fakes (filled below).
