// Package devcloud holds everything that exists only for `sysvm dev`, tests and benchmarks:
// the simulated hypervisors' start-up (vcsim, the XAPI simulator, libvirtd's test driver), the
// demo cloud seed, and the simulated router fleet. The production path (worker, api) never
// imports it.
package devcloud
