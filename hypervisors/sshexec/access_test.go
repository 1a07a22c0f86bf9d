package sshexec_test

import (
	"reflect"
	"testing"

	"github.com/sysvm/sysvm/hypervisors"
	"github.com/sysvm/sysvm/hypervisors/sshexec"
)

func TestAccess(t *testing.T) {
	kvm := sshexec.Target{VMName: "r-12-VM", Hypervisor: hypervisors.KVM, LinkLocalControl: true,
		HostAddress: "10.0.0.5", LinkLocalIP: "169.254.3.4", PrivateIP: "10.1.1.9"}
	got := sshexec.Access(kvm, "")
	want := sshexec.AccessInfo{
		Path:        sshexec.PathHostLinkLocal,
		Description: "KVM: through host 10.0.0.5, to the VM's link-local IP 169.254.3.4, port 3922, with the key on the host",
		Via:         "10.0.0.5", Address: "169.254.3.4", Port: 3922,
		Command: "ssh -t root@10.0.0.5 'ssh -i /root/.ssh/id_rsa.cloud 169.254.3.4 -p 3922'",
		Steps:   []string{"ssh root@10.0.0.5", "ssh -i /root/.ssh/id_rsa.cloud 169.254.3.4 -p 3922"},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("KVM access:\n got %+v\nwant %+v", got, want)
	}

	xen := kvm
	xen.Hypervisor, xen.HostPort, xen.Port = hypervisors.XenServer, 2222, 3923
	got = sshexec.Access(xen, "/root/my key")
	if got.Steps[0] != "ssh -p 2222 root@10.0.0.5" || got.Steps[1] != "ssh -i '/root/my key' 169.254.3.4 -p 3923" ||
		got.Command != `ssh -t -p 2222 root@10.0.0.5 'ssh -i '\''/root/my key'\'' 169.254.3.4 -p 3923'` {
		t.Errorf("Xen access with port and key path: %+v", got)
	}

	vmw := sshexec.Target{VMName: "s-3-VM", Hypervisor: hypervisors.VMware, PrivateIP: "10.1.1.9", LinkLocalIP: "169.254.0.1"}
	got = sshexec.Access(vmw, "")
	want = sshexec.AccessInfo{
		Path:        sshexec.PathDirectPrivate,
		Description: "VMware: from the management server straight to the VM's private IP 10.1.1.9, port 3922",
		Address:     "10.1.1.9", Port: 3922,
		Command: "ssh -i /var/lib/cloudstack/management/.ssh/id_rsa 10.1.1.9 -p 3922",
		Steps:   []string{"ssh -i /var/lib/cloudstack/management/.ssh/id_rsa 10.1.1.9 -p 3922"},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("VMware access:\n got %+v\nwant %+v", got, want)
	}
}

func TestTargetKeyAddressesAndString(t *testing.T) {
	jump := sshexec.Target{VMName: "r-1-VM", LinkLocalControl: true, HostAddress: "10.0.0.5", LinkLocalIP: "169.254.3.4"}
	if jump.HostKeyAddress() != "10.0.0.5:22" || jump.VMKeyAddress() != "vm:r-1-VM" ||
		jump.String() != "r-1-VM (169.254.3.4:3922 via 10.0.0.5:22)" {
		t.Errorf("jump: %q %q %q", jump.HostKeyAddress(), jump.VMKeyAddress(), jump)
	}
	jump.VMName = ""
	if jump.VMKeyAddress() != "10.0.0.5:22/169.254.3.4:3922" {
		t.Errorf("unnamed jump VM key address %q", jump.VMKeyAddress())
	}
	direct := sshexec.Target{PrivateIP: "fd00::9", Port: 3922}
	if direct.HostKeyAddress() != "" || direct.VMKeyAddress() != "[fd00::9]:3922" {
		t.Errorf("direct: %q %q", direct.HostKeyAddress(), direct.VMKeyAddress())
	}
}
