package metrics

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/sysvm/sysvm/hypervisors/sshexec"
)

// SSHCollector reads a worker's SSH executor at scrape time: the pool of SSH clients into
// hypervisor hosts and system VMs, and the connections that failed by hop kind (host, vm),
// stage (dial, handshake) and reason (auth, timeout, unreachable, canceled, other).
type SSHCollector struct {
	exec             *sshexec.Executor
	conns, max, errs *prometheus.Desc
}

// NewSSHCollector builds the collector over an executor.
func NewSSHCollector(exec *sshexec.Executor) *SSHCollector {
	return &SSHCollector{exec: exec,
		conns: prometheus.NewDesc("sysvm_ssh_pool_connections", "SSH clients by state: open (every client, pooled or one-off), pooled (kept for reuse), idle (pooled, unused).", []string{"state"}, nil),
		max:   prometheus.NewDesc("sysvm_ssh_pool_max_connections", "The bound on pooled SSH clients; a full pool falls back to one-off connections.", nil, nil),
		errs:  prometheus.NewDesc("sysvm_ssh_connect_errors_total", "SSH connections that failed, by hop kind (host, vm), stage (dial, handshake) and reason (auth, timeout, unreachable, canceled, other).", []string{"hop", "stage", "reason"}, nil),
	}
}

// Describe sends the descriptions.
func (s *SSHCollector) Describe(ch chan<- *prometheus.Desc) { ch <- s.conns; ch <- s.max; ch <- s.errs }

// Collect sends the pool's figures and the error counts.
func (s *SSHCollector) Collect(ch chan<- prometheus.Metric) {
	st := s.exec.Stats()
	ch <- prometheus.MustNewConstMetric(s.conns, prometheus.GaugeValue, float64(st.Open), "open")
	ch <- prometheus.MustNewConstMetric(s.conns, prometheus.GaugeValue, float64(st.Pooled), "pooled")
	ch <- prometheus.MustNewConstMetric(s.conns, prometheus.GaugeValue, float64(st.Idle), "idle")
	ch <- prometheus.MustNewConstMetric(s.max, prometheus.GaugeValue, float64(s.exec.MaxConns()))
	// Every combination is sent, 0 until it happens, so rate() and alerts see the series.
	type key struct{ hop, stage, reason string }
	counts := map[key]uint64{}
	for _, hop := range []sshexec.Hop{sshexec.HopHost, sshexec.HopVM} {
		for _, stage := range []string{sshexec.StageDial, sshexec.StageHandshake} {
			for _, reason := range sshexec.ConnectErrorReasons {
				counts[key{string(hop), stage, reason}] = 0
			}
		}
	}
	for _, e := range s.exec.ConnectErrors() {
		counts[key{string(e.Hop), e.Stage, e.Reason}] += e.Count
	}
	for k, n := range counts {
		ch <- prometheus.MustNewConstMetric(s.errs, prometheus.CounterValue, float64(n), k.hop, k.stage, k.reason)
	}
}
