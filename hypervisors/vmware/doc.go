// Package vmware is the VMware vSphere driver: it reaches a vCenter (or a standalone ESXi)
// through its SOAP SDK with github.com/vmware/govmomi and implements hypervisors.Driver.
//
// Inventory mapping:
//   - hosts are ESXi HostSystems, named by their inventory name;
//   - storage pools are datastores (capacity and free space from their summary);
//   - a template is a VirtualMachine marked as template, kept in the folder
//     vm/sysvm-templates/<datastore>/ of the datastore's datacenter, so the same template name
//     can be seeded into several datastores; Template.Ref is its inventory path;
//   - system VMs are cloned from a template into the datacenter's root VM folder, on the named
//     host, datastore and the host's cluster (or standalone host) root resource pool.
//
// Datacenters: with Connection.Datacenter empty the driver works across every datacenter of
// the vCenter (VM, host and template names are resolved in all of them; a VM name must be
// unique across the vCenter, which CreateVM enforces). With Connection.Datacenter set, every
// lookup is narrowed to that one datacenter and objects elsewhere are invisible.
//
// Boot arguments are written to the VM's extraConfig as guestinfo.cloudstack.cmdline (read in
// the guest with `vmtoolsd --cmd "info-get guestinfo.cloudstack.cmdline"`) and as machine.id,
// the key CloudStack's own VMware resource uses for the system VM cmdline. The driver keeps
// its own bookkeeping (template name, NIC roles and addresses) under sysvm.* keys.
package vmware
