//! heisen's end-to-end tests live in `tests/`: one per story, ad-hoc captures of software heisen
//! did not write (util-linux flock, nginx), replay with JUnit output, and clocks across hosts.
//! They run the real `heisen` binary against real agents in network namespaces (root) or on
//! loopback, with the guest programs of `heisen-guests`. This library is empty on purpose.
