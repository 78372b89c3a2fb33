//! Harness for the end-to-end tests: network namespaces, veth pairs and the
//! project's binaries, cleaned up by drop guards even when a test fails.
