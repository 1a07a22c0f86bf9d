package sshexec

import (
	"fmt"
	"strconv"
)

// Default key paths of CloudStack's access path (SPEC §1).
const (
	// HostKeyPath is the system VM private key on KVM and XenServer hosts.
	HostKeyPath = "/root/.ssh/id_rsa.cloud"
	// ManagementKeyPath is the system VM private key on the management server (VMware path).
	ManagementKeyPath = "/var/lib/cloudstack/management/.ssh/id_rsa"
)

// The access paths AccessInfo.Path names.
const (
	PathHostLinkLocal = "host-linklocal"
	PathDirectPrivate = "direct-private"
)

// AccessInfo tells a person how to log in to a system VM by hand.
type AccessInfo struct {
	// Path is PathHostLinkLocal (through the host, to the link-local IP) or PathDirectPrivate.
	Path string `json:"path"`
	// Description says the path in words.
	Description string `json:"description"`
	// Via is the host to log in to first ("" on the direct path).
	Via string `json:"via,omitempty"`
	// Address and Port are the VM's SSH endpoint along the path.
	Address string `json:"address"`
	Port    int    `json:"port"`
	// Command is one line that gets a shell in the VM.
	Command string `json:"command"`
	// Steps are the commands to type one after the other.
	Steps []string `json:"steps"`
}

// Access describes the manual access path to t. keyPath is the private key's path where the
// second (or only) ssh runs; "" uses CloudStack's: /root/.ssh/id_rsa.cloud on the host,
// /var/lib/cloudstack/management/.ssh/id_rsa on the management server.
func Access(t Target, keyPath string) AccessInfo {
	port := t.port()
	if !t.LinkLocalControl {
		if keyPath == "" {
			keyPath = ManagementKeyPath
		}
		cmd := fmt.Sprintf("ssh -i %s %s -p %d", Quote(keyPath), t.PrivateIP, port)
		return AccessInfo{
			Path: PathDirectPrivate,
			Description: fmt.Sprintf("%sfrom the management server straight to the VM's private IP %s, port %d",
				hvPrefix(t), t.PrivateIP, port),
			Address: t.PrivateIP,
			Port:    port,
			Command: cmd,
			Steps:   []string{cmd},
		}
	}
	if keyPath == "" {
		keyPath = HostKeyPath
	}
	portOpt := ""
	if hp := t.hostPort(); hp != DefaultHostPort {
		portOpt = "-p " + strconv.Itoa(hp) + " "
	}
	hostLogin := "ssh " + portOpt + "root@" + t.HostAddress
	vmLogin := fmt.Sprintf("ssh -i %s %s -p %d", Quote(keyPath), t.LinkLocalIP, port)
	return AccessInfo{
		Path: PathHostLinkLocal,
		Description: fmt.Sprintf("%sthrough host %s, to the VM's link-local IP %s, port %d, with the key on the host",
			hvPrefix(t), t.HostAddress, t.LinkLocalIP, port),
		Via:     t.HostAddress,
		Address: t.LinkLocalIP,
		Port:    port,
		Command: "ssh -t " + portOpt + "root@" + t.HostAddress + " " + Quote(vmLogin),
		Steps:   []string{hostLogin, vmLogin},
	}
}

func hvPrefix(t Target) string {
	if t.Hypervisor == "" {
		return ""
	}
	return string(t.Hypervisor) + ": "
}
