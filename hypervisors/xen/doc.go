// Package xen is the XenServer / XCP-ng driver. It speaks XAPI's JSON-RPC (POST /jsonrpc)
// to the pool master through a small typed client of its own, and XAPI's HTTP import handler
// (PUT /import_raw_vdi) for template disks. It is tested against xapisim, a XAPI simulator
// speaking the same wire protocol.
//
// Mapping onto XAPI: hosts are the pool's hosts, storage pools its SRs, a system VM template
// is a VM template (is_a_template) whose disk VDI lives in an SR, and a system VM is a clone
// of it with VCPUs, memory limits, an affinity host, one VIF per NIC (IPv4 recorded with
// VIF.configure_ipv4) and CloudStack's boot arguments in PV_args ("%"-separated, as
// CloudStack writes them) and in xenstore_data["vm-data/cloudstack/init"].
package xen
