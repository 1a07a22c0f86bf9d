package xapisim

import (
	"fmt"
	"strconv"
	"time"
)

const (
	classHost        = "host"
	classHostMetrics = "host_metrics"
	// CodeHostDisabled: start_on / pool_migrate to a disabled host.
	CodeHostDisabled = "HOST_DISABLED"
)

// hostRec is XAPI's host class.
type hostRec struct {
	UUID             string            `xapi:"uuid"`
	NameLabel        string            `xapi:"name_label,rw"`
	NameDescription  string            `xapi:"name_description,rw"`
	Hostname         string            `xapi:"hostname"`
	Address          string            `xapi:"address"`
	Enabled          bool              `xapi:"enabled"`
	SoftwareVersion  map[string]string `xapi:"software_version"`
	CPUInfo          map[string]string `xapi:"cpu_info"`
	APIVersionMajor  int64             `xapi:"API_version_major"`
	APIVersionMinor  int64             `xapi:"API_version_minor"`
	APIVersionVendor string            `xapi:"API_version_vendor"`
	ResidentVMs      []string          `xapi:"resident_VMs"`
	Metrics          string            `xapi:"metrics"`
	ControlDomain    string            `xapi:"control_domain"`
	MemoryOverhead   int64             `xapi:"memory_overhead"`
	Edition          string            `xapi:"edition"`
	OtherConfig      map[string]string `xapi:"other_config,rw"`
	Tags             []string          `xapi:"tags,rw"`
}

// hostMetricsRec is XAPI's host_metrics class.
type hostMetricsRec struct {
	UUID        string            `xapi:"uuid"`
	MemoryTotal int64             `xapi:"memory_total"`
	MemoryFree  int64             `xapi:"memory_free"`
	Live        bool              `xapi:"live"`
	LastUpdated time.Time         `xapi:"last_updated"`
	OtherConfig map[string]string `xapi:"other_config,rw"`
}

func newHostClass() *class        { return newClass(classHost, hostRec{}) }
func newHostMetricsClass() *class { return newClass(classHostMetrics, hostMetricsRec{}) }

const mib = 1 << 20

func (s *Server) addHost(h HostSpec) string {
	if h.CPUs <= 0 {
		h.CPUs = 8
	}
	if h.CPUMHz <= 0 {
		h.CPUMHz = 2400
	}
	if h.MemoryMB <= 0 {
		h.MemoryMB = 65536
	}
	total := h.MemoryMB * mib
	metrics := s.db.add(classHostMetrics, &hostMetricsRec{
		UUID: newUUID(), MemoryTotal: total, MemoryFree: total, Live: true,
		LastUpdated: time.Now().UTC(), OtherConfig: map[string]string{},
	})
	n := len(s.db.classes[classHost].objs) + 1
	ref := s.db.add(classHost, &hostRec{
		UUID: newUUID(), NameLabel: h.Name, Hostname: h.Name,
		Address: fmt.Sprintf("192.0.2.%d", 10+n), Enabled: true,
		SoftwareVersion: map[string]string{
			"product_brand": s.opts.ProductBrand, "product_version": s.opts.ProductVersion,
			"product_version_text": s.opts.ProductVersion, "platform_name": "XCP",
			"platform_version": "3.2.1", "xapi": "1.20", "xen": "4.13.4", "hostname": h.Name,
			"build_number": "release/yangtze/master/58", "date": "2022-05-20",
		},
		CPUInfo: map[string]string{
			"cpu_count": strconv.Itoa(h.CPUs), "socket_count": "1", "vendor": "GenuineIntel",
			"speed": fmt.Sprintf("%d.000", h.CPUMHz), "modelname": "Intel(R) Xeon(R) CPU (xapisim)",
			"family": "6", "model": "85", "stepping": "7",
		},
		APIVersionMajor: 2, APIVersionMinor: 20, APIVersionVendor: "XenSource",
		ResidentVMs: []string{}, Metrics: metrics, MemoryOverhead: 0, Edition: "xcp-ng",
		OtherConfig: map[string]string{}, Tags: []string{},
	})
	host, _ := lookup[hostRec](s.db, classHost, ref)
	host.ControlDomain = s.addControlDomain(ref, host, total)
	return ref
}

func (s *Server) hostMetrics(h *hostRec) *hostMetricsRec {
	m, _ := lookup[hostMetricsRec](s.db, classHostMetrics, h.Metrics)
	return m
}

func (s *Server) registerHost() {
	s.methods["host.compute_free_memory"] = &method{name: "host.compute_free_memory", params: []param{pRef("host", classHost)}, readOnly: true,
		fn: func(c *call) (any, error) {
			obj := c.object(0)
			return s.hostMetrics(obj.(*hostRec)).MemoryFree, nil
		}}
	s.methods["host.disable"] = &method{name: "host.disable", params: []param{pRef("host", classHost)},
		fn: func(c *call) (any, error) {
			obj := c.object(0)
			obj.(*hostRec).Enabled = false
			return "", nil
		}}
	s.methods["host.enable"] = &method{name: "host.enable", params: []param{pRef("host", classHost)},
		fn: func(c *call) (any, error) {
			obj := c.object(0)
			h := obj.(*hostRec)
			if !s.hostMetrics(h).Live {
				return nil, fail(CodeHostOffline, c.ref(0))
			}
			h.Enabled = true
			return "", nil
		}}
}

// hostUsable fails unless a host is live and enabled (start_on, pool_migrate targets).
func (s *Server) hostUsable(ref string, h *hostRec) *Failure {
	if !s.hostMetrics(h).Live {
		return fail(CodeHostOffline, ref)
	}
	if !h.Enabled {
		return fail(CodeHostDisabled, ref)
	}
	return nil
}

// SetHostLive marks a host up or down, as if it lost or regained contact with the master: a
// dead host reports host_metrics.live=false, is disabled, and refuses new VMs with
// HOST_OFFLINE.
func (s *Server) SetHostLive(name string, live bool) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, hosts := all[hostRec](s.db, classHost)
	for _, h := range hosts {
		if h.NameLabel == name {
			s.hostMetrics(h).Live = live
			h.Enabled = live
			return nil
		}
	}
	return fmt.Errorf("xapisim: no host %q", name)
}
