// Package kvm is the KVM driver: it speaks libvirt's RPC protocol to libvirtd through
// github.com/digitalocean/go-libvirt and builds every domain and volume XML document from
// libvirt.org/go/libvirtxml structs (never from string templates).
//
// # Endpoints
//
// hypervisors.Connection.Endpoint and every value of Connection.Hosts is one libvirtd endpoint:
//
//	unix://[/path/to/socket]?uri=<libvirt URI>    e.g. unix:///run/libvirt/libvirt-sock?uri=qemu:///system
//	tcp://<host>[:16509]?uri=<libvirt URI>          e.g. tcp://10.0.0.5:16509?uri=qemu:///system
//
// The scheme is the transport to libvirtd; the path of a unix endpoint is the daemon's socket
// (default /run/libvirt/libvirt-sock); the uri parameter is the libvirt URI the daemon opens
// on our behalf (default qemu:///system). libvirt's own client form is accepted too and
// converted: qemu+unix:///system?socket=/run/libvirt/libvirt-sock and qemu+tcp://host/system.
// go-libvirt does no SASL, so Username and Password are not used: a tcp endpoint needs
// auth_tcp="none" on a trusted management network (or a unix socket reached through the host's
// own agent).
//
// # Hosts and storage
//
// A KVM cluster has no manager: each host runs its own libvirtd. The driver holds one libvirt
// connection per host (Connection.Hosts maps the host's name to its endpoint) and finds a VM by
// asking every host. Primary storage is shared by the hosts of a cluster (NFS, shared mount
// point, Ceph) and is reached through Connection.Endpoint, the "storage connection"; when
// Endpoint is empty the first host (by name) is used. When Hosts is empty the endpoint is the
// only host and its name is the hostname libvirtd reports. Each host must have its own
// endpoint: two hosts on one endpoint would see the same domains.
//
// # System VM boot arguments
//
// CloudStack hands a KVM system VM its role and addresses as a cmdline
// ("type=domainrouter name=r-12-VM eth0ip=169.254.3.4 ..."), delivered by the host agent
// through the VM's virtio-serial channel once the guest is up. This driver keeps the boot
// arguments in the domain's <metadata>, under the namespace MetadataNamespace:
//
//	<metadata>
//	  <instance xmlns="https://github.com/sysvm/sysvm/xmlns/libvirt/1">
//	    <template>systemvm-kvm-4.20</template>
//	    <pool>default-pool</pool>
//	    <rootVolume>/default-pool/r-12-VM-ROOT</rootVolume>
//	    <cmdline>name=r-12-VM type=domainrouter</cmdline>
//	    <arg key="name">r-12-VM</arg>
//	    <arg key="type">domainrouter</arg>
//	    <nic mac="0e:00:a9:fe:01:02" kind="control" ip="169.254.1.2" netmask="255.255.0.0"/>
//	  </instance>
//	</metadata>
//
// (`virsh metadata <vm> https://github.com/sysvm/sysvm/xmlns/libvirt/1` prints it), so GetVM
// reads them back exactly (each argument as its own element; the cmdline is the same
// set rendered by hypervisors.BootArgsString for people reading `virsh dumpxml`). The domain
// also gets the org.qemu.guest_agent.0 virtio-serial channel through which a host agent writes
// the cmdline into the guest (/var/cache/cloud/cmdline), as CloudStack 4.16+ does; pushing it
// is not done by this driver.
//
// # Domain shape
//
// CPUs, memory, cpu shares (CPUs x CPUMHz, as CloudStack sets them), one virtio disk backed by
// a full clone "<vm>-ROOT" of the template volume in the pool, one virtio NIC per spec NIC on
// its bridge with its MAC (control NICs default to bridge cloud0, CloudStack's link-local
// bridge; others to cloudbr0), a serial console, and the guest agent channel. The domain type
// follows the connection: "test" on libvirt's test driver, "kvm" where the host offers it, else
// "qemu" (TCG).
//
// # Migration and scaling
//
// Capabilities report LiveMigration=false and HotScale=false: MigrateVM moves a stopped VM by
// defining its inactive XML on the target host and undefining it on the source (the root disk
// stays where it is, on the cluster's shared storage); ScaleVM redefines a stopped VM. Both
// return ErrBadState for a running VM.
//
// # Templates
//
// SeedTemplate fetches a file:// or http(s):// URL to a temporary file while hashing it,
// verifies the checksum before any volume exists (mismatch: ErrInvalid), then creates
// "<name>.part" from a libvirtxml StorageVolume, streams the bytes into it with
// virStorageVolUpload and copies it to "<name>" only once complete, so an interrupted seed
// never leaves a volume later seeds would take as done. libvirt's test driver keeps volumes
// without data and refuses uploads; on that driver alone the volume is kept without its bytes
// (logged); any other driver refusing the upload is an error. Two processes seeding the same
// template into the same pool at once are not supported (one Driver serialises its own).
//
// # Two hosts on libvirt's test driver
//
// Through a daemon, test:///default is one shared in-memory host per libvirtd that lives while
// at least one connection is open, and test:///abs/file.xml gives every connection its own fresh
// copy of the host described in the file. The conformance test therefore uses, on the system
// libvirtd, host 1 = test:///default (also the storage connection, with its default-pool) and
// host 2 = test:///<tmp>/host2.xml (a node with CPUs, memory and a pool), which the Driver holds
// open for its whole life. devcloud instead starts one private libvirtd per simulated host so
// that state outlives any one Driver (see devcloud.StartKVM).
package kvm
