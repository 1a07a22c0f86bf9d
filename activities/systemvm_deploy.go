package activities

// Deploying a new CPVM or SSVM into a zone. The row is allocated first (name, addresses,
// host, pool, template) under the zone lock and journaled with the operation ID in the same
// transaction, so a retry or a worker killed mid-way finds the VM it allocated and never makes
// a second one; then it is created on the hypervisor, started, verified over SSH (and, for a
// CPVM, its console endpoint over TLS) and committed Running. A failed or canceled deploy
// discards what it built: the hypervisor's VM is destroyed and the row settled (Destroyed, or
// Error with LastError when the hypervisor cannot confirm).

import (
	"context"
	"crypto/sha1"
	"crypto/tls"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"
	"go.temporal.io/sdk/temporal"
	"gorm.io/gorm"
	"gorm.io/gorm/clause"

	"github.com/sysvm/sysvm/agent"
	"github.com/sysvm/sysvm/hypervisors"
	"github.com/sysvm/sysvm/hypervisors/sshexec"
	"github.com/sysvm/sysvm/models"
)

// The steps of a system VM deploy, in order, and its compensation.
const (
	// StepAllocate chooses the new VM's name, addresses, host, pool and template and inserts
	// its row (Starting), journaled in the same transaction.
	StepAllocate Step = "allocate"
	// StepDeploySeed makes the template present in the chosen pool.
	StepDeploySeed Step = "deploy-seed"
	// StepDeployCreate defines the VM on the hypervisor (stopped).
	StepDeployCreate Step = "deploy-create"
	// StepDeployStart powers it on.
	StepDeployStart Step = "deploy-start"
	// StepDeployVerify checks it runs, answers `sysvm-agent version` over SSH along the access
	// path with the template version it was built from and, for a CPVM, serves TLS on its
	// console endpoint.
	StepDeployVerify Step = "deploy-verify"
	// StepDeployCommit records it Running on its host.
	StepDeployCommit Step = "deploy-commit"
	// StepDeployDiscard destroys what a failed or canceled deploy built (compensation).
	StepDeployDiscard Step = "deploy-discard"
)

// DeploySteps are the forward steps of a deploy after StepAllocate.
func DeploySteps() []Step {
	return []Step{StepDeploySeed, StepDeployCreate, StepDeployStart, StepDeployVerify, StepDeployCommit}
}

// deployJournalKey is the journal key of a deploy step.
func deployJournalKey(s Step) string { return "deploy." + string(s) }

// DeployRequest asks for a new system VM.
type DeployRequest struct {
	OperationID string `json:"operationId"`
	// VMID is the new row's ID; empty derives one from the operation ID (so a parent that
	// runs the deploy under the VM's workflow ID chooses it first).
	VMID   string `json:"vmId,omitempty"`
	ZoneID string `json:"zoneId"`
	// Type is models.TypeCPVM or models.TypeSSVM.
	Type string `json:"type"`
	// HostID places the VM on that host (of the zone); empty picks an Up host with room.
	HostID string `json:"hostId,omitempty"`
}

// DeployPlan is what StepAllocate chose, journaled under the operation ID.
type DeployPlan struct {
	VMID           string `json:"vmId"`
	Name           string `json:"name"`
	Type           string `json:"type"`
	ZoneID         string `json:"zoneId"`
	ClusterID      string `json:"clusterId"`
	HostID         string `json:"hostId"`
	Host           string `json:"host"`
	PoolID         string `json:"poolId"`
	TemplateID     string `json:"templateId"`
	HypervisorType string `json:"hypervisorType"`
	PublicIP       string `json:"publicIp"`
	PrivateIP      string `json:"privateIp"`
	LinkLocalIP    string `json:"linkLocalIp,omitempty"`
}

// DeployStepInput asks for one step of a deploy (or its discard).
type DeployStepInput struct {
	OperationID string `json:"operationId"`
	Step        Step   `json:"step"`
	// VMID is the plan's VM (for the forward steps; the discard reads the journal).
	VMID string `json:"vmId,omitempty"`
	// Reason is why a discard runs (recorded as LastError).
	Reason string `json:"reason,omitempty"`
}

// DeployStepResult is what a deploy step reports.
type DeployStepResult struct {
	State   string `json:"state,omitempty"`
	Host    string `json:"host,omitempty"`
	Detail  string `json:"detail,omitempty"`
	Skipped bool   `json:"skipped,omitempty"`
	// ConsoleAddr is where a verified CPVM's console endpoint serves TLS.
	ConsoleAddr string `json:"consoleAddr,omitempty"`
}

// DeployVMID is the row ID a deploy of that operation uses when its request names none.
func DeployVMID(operationID string) string {
	return uuid.NewSHA1(uuid.NameSpaceURL, []byte("sysvm:deploy:"+operationID)).String()
}

var systemVMName = regexp.MustCompile(`^[a-z]-(\d+)-VM$`)

// AllocateSystemVM chooses the new VM's name (CloudStack's v-<n>-VM or s-<n>-VM, n one more
// than any system VM's), a public IP from the zone's public ranges, a private IP from its pod's
// range, a link-local control address (KVM, XenServer), an Up host with room (or the one asked
// for), the cluster's pool and the current system VM template of the hypervisor, and inserts
// the row (Starting) and the journal entry in one transaction under the zone lock, so two
// deploys never take one address or name. A retry returns the journaled plan.
func (a *Activities) AllocateSystemVM(ctx context.Context, in DeployRequest) (DeployPlan, error) {
	if in.OperationID == "" {
		return DeployPlan{}, temporal.NewNonRetryableApplicationError("a deploy needs an operation ID (its journal)", ErrTypeNotAllowed, nil)
	}
	if in.Type != models.TypeCPVM && in.Type != models.TypeSSVM {
		return DeployPlan{}, temporal.NewNonRetryableApplicationError(
			fmt.Sprintf("type %q cannot be deployed (want %s or %s)", in.Type, models.TypeCPVM, models.TypeSSVM), ErrTypeNotAllowed, nil)
	}
	key := deployJournalKey(StepAllocate)
	if detail, done, err := a.stepDetail(ctx, in.OperationID, key); err != nil {
		return DeployPlan{}, err
	} else if done {
		var p DeployPlan
		if err := json.Unmarshal([]byte(detail), &p); err != nil {
			return DeployPlan{}, fmt.Errorf("journaled deploy plan of %s: %w", in.OperationID, err)
		}
		return p, nil
	}
	var zone models.Zone
	if err := a.Store.Get(ctx, &zone, in.ZoneID); err != nil {
		if errors.Is(err, models.ErrNotFound) {
			return DeployPlan{}, temporal.NewNonRetryableApplicationError("zone "+in.ZoneID+" not found", ErrTypeNotFound, err)
		}
		return DeployPlan{}, err
	}
	vmID := in.VMID
	if vmID == "" {
		vmID = DeployVMID(in.OperationID)
	}
	sum := sha1.Sum([]byte("sysvm:deploy:" + in.OperationID))
	var p DeployPlan
	err := a.Store.DB.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		if err := a.lockNames(tx); err != nil {
			return err
		}
		if err := a.lockZone(tx, zone.ID); err != nil {
			return err
		}
		var rows []models.OperationStep
		if err := tx.Where("operation_id = ? AND step = ?", in.OperationID, key).Find(&rows).Error; err != nil {
			return fmt.Errorf("read journal of %s: %w", in.OperationID, err)
		}
		if len(rows) > 0 { // a concurrent attempt allocated first
			return json.Unmarshal([]byte(rows[0].Detail), &p)
		}
		var n int64
		if err := tx.Model(&models.SystemVM{}).Where("id = ?", vmID).Count(&n).Error; err != nil {
			return err
		}
		if n > 0 {
			return temporal.NewNonRetryableApplicationError("system VM "+vmID+" exists already", ErrTypeNotAllowed, nil)
		}
		row, err := a.allocateRow(ctx, tx, zone, in, vmID, sum)
		if err != nil {
			return err
		}
		if err := tx.Create(&row).Error; err != nil {
			return fmt.Errorf("insert %s: %w", row.Name, err)
		}
		var host models.Host
		_ = tx.First(&host, "id = ?", row.HostID).Error
		p = DeployPlan{VMID: row.ID, Name: row.Name, Type: row.Type, ZoneID: row.ZoneID, ClusterID: row.ClusterID,
			HostID: row.HostID, Host: host.Name, PoolID: row.StoragePoolID, TemplateID: row.TemplateID,
			HypervisorType: row.HypervisorType, PublicIP: row.PublicIP, PrivateIP: row.PrivateIP, LinkLocalIP: row.LinkLocalIP}
		b, _ := json.Marshal(p)
		return tx.Create(&models.OperationStep{OperationID: in.OperationID, Step: key, CompletedAt: time.Now().UTC(), Detail: string(b)}).Error
	})
	if err != nil {
		var app *temporal.ApplicationError
		if errors.As(err, &app) {
			return DeployPlan{}, err
		}
		return DeployPlan{}, fmt.Errorf("allocate %s in zone %s: %w", in.Type, zone.Name, err)
	}
	return p, nil
}

// lockNames serializes the choice of system VM names (unique across zones): on MariaDB a
// locking read of the first zone row; SQLite serializes writing transactions itself.
func (a *Activities) lockNames(tx *gorm.DB) error {
	if a.Store.Dialect() != "mysql" {
		return nil
	}
	var z models.Zone
	err := tx.Clauses(clause.Locking{Strength: "UPDATE"}).Select("id").Order("id").First(&z).Error
	if err != nil && !errors.Is(err, gorm.ErrRecordNotFound) {
		return fmt.Errorf("lock system VM names: %w", err)
	}
	return nil
}

// allocateRow builds the new VM's row inside the allocation transaction.
func (a *Activities) allocateRow(ctx context.Context, tx *gorm.DB, zone models.Zone, in DeployRequest, vmID string, sum [20]byte) (models.SystemVM, error) {
	host, err := a.pickHost(ctx, tx, zone, in.HostID)
	if err != nil {
		return models.SystemVM{}, err
	}
	var cluster models.Cluster
	if err := tx.First(&cluster, "id = ?", host.ClusterID).Error; err != nil {
		return models.SystemVM{}, fmt.Errorf("cluster of host %s: %w", host.Name, err)
	}
	t, err := hypervisors.ParseType(cluster.HypervisorType)
	if err != nil {
		return models.SystemVM{}, temporal.NewNonRetryableApplicationError(err.Error(), ErrTypeNotAllowed, err)
	}
	var pool models.StoragePool
	if err := tx.Where("cluster_id = ?", cluster.ID).Order("name").First(&pool).Error; err != nil {
		if err := tx.Where("zone_id = ? AND scope = ?", zone.ID, "ZONE").Order("name").First(&pool).Error; err != nil {
			return models.SystemVM{}, temporal.NewNonRetryableApplicationError(
				fmt.Sprintf("no primary storage pool in cluster %s or zone %s", cluster.Name, zone.Name), ErrTypeNotAllowed, nil)
		}
	}
	tplName, err := a.Store.Settings.In(tx).String(ctx, "router.template."+t.SettingSuffix(), models.Scope{ZoneID: zone.ID, ClusterID: cluster.ID})
	if err != nil {
		return models.SystemVM{}, err
	}
	var tpl models.Template
	if tplName == "" {
		return models.SystemVM{}, temporal.NewNonRetryableApplicationError(
			fmt.Sprintf("no system VM template for %s: set router.template.%s", t, t.SettingSuffix()), ErrTypeNotAllowed, nil)
	}
	if err := tx.Where("name = ? AND hypervisor = ?", tplName, string(t)).Order("created_at desc").First(&tpl).Error; err != nil {
		return models.SystemVM{}, temporal.NewNonRetryableApplicationError(
			fmt.Sprintf("router.template.%s names %q, which is not a registered %s template", t.SettingSuffix(), tplName, t), ErrTypeNotAllowed, nil)
	}
	cpus, mem, offID := 1, 512, ""
	var off models.ServiceOffering
	if err := tx.Where("system_vm_type = ?", in.Type).Order("name").First(&off).Error; err == nil ||
		tx.Where("memory_mb >= ?", 512).Order("name").First(&off).Error == nil {
		cpus, mem, offID = max(off.CPUs, 1), max(off.MemoryMB, 512), off.ID
	}
	name, err := nextSystemVMName(tx, in.Type)
	if err != nil {
		return models.SystemVM{}, err
	}
	seed := binary.BigEndian.Uint32(sum[12:16])
	publicIP, err := freePublicIP(ctx, tx, zone, seed)
	if err != nil {
		return models.SystemVM{}, err
	}
	privateIP, err := freePodIP(ctx, tx, host.PodID, seed)
	if err != nil {
		return models.SystemVM{}, err
	}
	row := models.SystemVM{Base: models.Base{ID: vmID}, Name: name, Type: in.Type, State: models.StateStarting,
		ZoneID: zone.ID, PodID: host.PodID, ClusterID: cluster.ID, HostID: host.ID, StoragePoolID: pool.ID,
		HypervisorType: string(t), TemplateID: tpl.ID, Version: tpl.Version, ServiceOfferingID: offID, CPUs: cpus, MemoryMB: mem,
		PublicIP: publicIP, PrivateIP: privateIP,
		PublicMAC:  fmt.Sprintf("06:%02x:%02x:%02x:%02x:%02x", sum[0], sum[1], sum[2], sum[3], sum[4]),
		PrivateMAC: fmt.Sprintf("1e:%02x:%02x:%02x:%02x:%02x", sum[5], sum[6], sum[7], sum[8], sum[9])}
	if t.LinkLocalControl() {
		probe := row
		if row.LinkLocalIP, err = a.freeControlIP(ctx, tx, &probe, true, seed); err != nil {
			return models.SystemVM{}, err
		}
		row.LinkLocalMAC = fmt.Sprintf("0e:%02x:%02x:%02x:%02x:%02x", sum[10], sum[11], sum[12], sum[13], sum[14])
	}
	return row, nil
}

// pickHost is the host asked for (it must be an Up host of the zone) or the zone's Up host
// with the most free memory after its system VMs, by name among equals.
func (a *Activities) pickHost(ctx context.Context, tx *gorm.DB, zone models.Zone, hostID string) (models.Host, error) {
	var hosts []models.Host
	q := tx.WithContext(ctx).Where("zone_id = ? AND state = ?", zone.ID, models.HostUp)
	if hostID != "" {
		q = q.Where("id = ?", hostID)
	}
	if err := q.Order("name").Find(&hosts).Error; err != nil {
		return models.Host{}, fmt.Errorf("hosts of zone %s: %w", zone.Name, err)
	}
	if len(hosts) == 0 {
		if hostID != "" {
			return models.Host{}, temporal.NewNonRetryableApplicationError(
				fmt.Sprintf("host %s is not an Up host of zone %s", hostID, zone.Name), ErrTypeNotAllowed, nil)
		}
		return models.Host{}, temporal.NewNonRetryableApplicationError("zone "+zone.Name+" has no Up host", ErrTypeNotAllowed, nil)
	}
	type use struct {
		HostID string
		Mem    int64
	}
	var uses []use
	if err := tx.WithContext(ctx).Model(&models.SystemVM{}).Select("host_id, COALESCE(SUM(memory_mb), 0) AS mem").
		Where("zone_id = ? AND state <> ?", zone.ID, models.StateDestroyed).Group("host_id").Scan(&uses).Error; err != nil {
		return models.Host{}, fmt.Errorf("system VMs per host: %w", err)
	}
	used := map[string]int64{}
	for _, u := range uses {
		used[u.HostID] = u.Mem
	}
	free := func(h models.Host) int64 { return h.MemoryMB - used[h.ID] }
	sort.SliceStable(hosts, func(i, j int) bool { return free(hosts[i]) > free(hosts[j]) })
	if free(hosts[0]) < 512 {
		return models.Host{}, temporal.NewNonRetryableApplicationError(
			fmt.Sprintf("no Up host of zone %s has 512 MB free for a system VM", zone.Name), ErrTypeNotAllowed, nil)
	}
	return hosts[0], nil
}

// nextSystemVMName is CloudStack's name for a new VM of the type: v-<n>-VM (CPVM) or
// s-<n>-VM (SSVM), n one more than the largest of every system VM's name (destroyed ones too:
// a name is never reused).
func nextSystemVMName(tx *gorm.DB, typ string) (string, error) {
	var names []string
	if err := tx.Model(&models.SystemVM{}).Pluck("name", &names).Error; err != nil {
		return "", fmt.Errorf("system VM names: %w", err)
	}
	n := 0
	for _, s := range names {
		if m := systemVMName.FindStringSubmatch(s); m != nil {
			if v, err := strconv.Atoi(m[1]); err == nil && v > n {
				n = v
			}
		}
	}
	prefix := "s"
	if typ == models.TypeCPVM {
		prefix = "v"
	}
	return fmt.Sprintf("%s-%d-VM", prefix, n+1), nil
}

// freePublicIP picks an address of the zone's public IP ranges no live system VM holds.
func freePublicIP(ctx context.Context, tx *gorm.DB, zone models.Zone, start uint32) (string, error) {
	var ranges []models.PublicIPRange
	if err := tx.WithContext(ctx).Where("zone_id = ?", zone.ID).Order("start_ip").Find(&ranges).Error; err != nil {
		return "", fmt.Errorf("public IP ranges of zone %s: %w", zone.Name, err)
	}
	if len(ranges) == 0 {
		return "", temporal.NewNonRetryableApplicationError(
			fmt.Sprintf("zone %s has no public IP range: a new system VM needs a public IP", zone.Name), ErrTypeNotAllowed, nil)
	}
	var used []string
	if err := tx.WithContext(ctx).Model(&models.SystemVM{}).Where("state <> ? AND public_ip <> ''", models.StateDestroyed).
		Pluck("public_ip", &used).Error; err != nil {
		return "", fmt.Errorf("public IPs in use: %w", err)
	}
	taken := map[string]bool{}
	for _, ip := range used {
		taken[ip] = true
	}
	for _, r := range ranges {
		if ip, ok := freeIn(r.StartIP, r.EndIP, start, taken); ok {
			return ip, nil
		}
	}
	return "", temporal.NewNonRetryableApplicationError(
		fmt.Sprintf("every public IP of zone %s's ranges is taken", zone.Name), ErrTypeNotAllowed, nil)
}

// freePodIP picks a private address of the pod's range no live system VM holds and no open
// recreate plan reserved.
func freePodIP(ctx context.Context, tx *gorm.DB, podID string, start uint32) (string, error) {
	var pod models.Pod
	if err := tx.WithContext(ctx).First(&pod, "id = ?", podID).Error; err != nil {
		return "", temporal.NewNonRetryableApplicationError("pod "+podID+" of the chosen host not found", ErrTypeNotAllowed, err)
	}
	var used []string
	if err := tx.WithContext(ctx).Model(&models.SystemVM{}).Where("state <> ? AND private_ip <> ''", models.StateDestroyed).
		Pluck("private_ip", &used).Error; err != nil {
		return "", fmt.Errorf("private IPs in use: %w", err)
	}
	taken, err := reservedControlIPs(ctx, tx, false)
	if err != nil {
		return "", err
	}
	for _, ip := range used {
		taken[ip] = true
	}
	if ip, ok := freeIn(pod.StartIP, pod.EndIP, start, taken); ok {
		return ip, nil
	}
	return "", temporal.NewNonRetryableApplicationError(
		fmt.Sprintf("no free private IP in pod %s (%s-%s)", pod.Name, pod.StartIP, pod.EndIP), ErrTypeNotAllowed, nil)
}

// freeIn is the first address of [from, to] not taken, searched from an offset start spreads.
func freeIn(from, to string, start uint32, taken map[string]bool) (string, bool) {
	a, err1 := netip.ParseAddr(from)
	b, err2 := netip.ParseAddr(to)
	if err1 != nil || err2 != nil || !a.Is4() || !b.Is4() {
		return "", false
	}
	lo, hi := binary.BigEndian.Uint32(a.AsSlice()), binary.BigEndian.Uint32(b.AsSlice())
	if hi < lo {
		return "", false
	}
	n := hi - lo + 1
	for i := uint32(0); i < n; i++ {
		v := lo + (start+i)%n
		var b4 [4]byte
		binary.BigEndian.PutUint32(b4[:], v)
		ip := netip.AddrFrom4(b4).String()
		if !taken[ip] {
			return ip, true
		}
	}
	return "", false
}

// DeployStep does one step of a deploy after StepAllocate, or its discard. Forward steps are
// journaled; a retried step that is journaled is not done again.
func (a *Activities) DeployStep(ctx context.Context, in DeployStepInput) (DeployStepResult, error) {
	if in.Step == StepDeployDiscard {
		return a.discardDeploy(ctx, in)
	}
	key := deployJournalKey(in.Step)
	if detail, done, err := a.stepDetail(ctx, in.OperationID, key); err != nil {
		return DeployStepResult{}, err
	} else if done {
		return DeployStepResult{Skipped: true, Detail: detail}, nil
	}
	var vm models.SystemVM
	if err := a.Store.Get(ctx, &vm, in.VMID); err != nil {
		return DeployStepResult{}, classifyStore(err, in.VMID)
	}
	if vm.State == models.StateDestroyed {
		return DeployStepResult{}, temporal.NewNonRetryableApplicationError("system VM "+vm.Name+" is destroyed", ErrTypeNotAllowed, nil)
	}
	var res DeployStepResult
	var stepErr error
	err := heartbeatWhile(ctx, string(in.Step), func() error {
		d, err := a.driverFor(ctx, vm.ClusterID)
		if err != nil {
			return err
		}
		res, stepErr = a.deployStep(ctx, d, &vm, in)
		return nil
	})
	if err != nil {
		return DeployStepResult{}, err
	}
	if stepErr != nil {
		var app *temporal.ApplicationError
		if errors.As(stepErr, &app) {
			return res, stepErr
		}
		return res, classify(fmt.Errorf("%s of %s: %w", in.Step, vm.Name, stepErr))
	}
	if err := a.markStep(ctx, in.OperationID, key, res.Detail); err != nil {
		return res, err
	}
	return res, nil
}

func (a *Activities) deployStep(ctx context.Context, d hypervisors.Driver, vm *models.SystemVM, in DeployStepInput) (DeployStepResult, error) {
	step := in.Step
	switch step {
	case StepDeploySeed:
		b, err := a.resolveBuild(ctx, vm)
		if err != nil {
			return DeployStepResult{}, err
		}
		return DeployStepResult{Detail: "template " + b.tpl.Name + " in " + b.pool.Name}, a.seed(ctx, d, b)
	case StepDeployCreate:
		b, err := a.resolveBuild(ctx, vm)
		if err != nil {
			return DeployStepResult{}, err
		}
		spec := SpecFor(vm, b.host.Name, b.pool.Name, b.tpl.Name)
		if err := a.Store.Secrets.ForgetHostKey(ctx, "vm:"+vm.Name); err != nil {
			return DeployStepResult{}, err
		}
		if err := a.withKey(ctx, &spec); err != nil {
			return DeployStepResult{}, err
		}
		_, err = d.CreateVM(ctx, spec)
		if errors.Is(err, hypervisors.ErrAlreadyExists) {
			return DeployStepResult{Detail: "already created"}, nil
		}
		return DeployStepResult{Detail: "created " + vm.HypervisorName() + " from " + b.tpl.Name + " on " + b.host.Name}, err
	case StepDeployStart:
		if err := d.StartVM(ctx, vm.HypervisorName()); err != nil {
			return DeployStepResult{}, err
		}
		info, err := d.GetVM(ctx, vm.HypervisorName())
		if err != nil {
			return DeployStepResult{}, fmt.Errorf("inspect %s: %w", vm.HypervisorName(), err)
		}
		return DeployStepResult{State: stateOf(info.State), Host: info.Host, Detail: "started on " + info.Host}, nil
	case StepDeployVerify:
		return a.verifyNew(ctx, d, vm, in.OperationID)
	case StepDeployCommit:
		info, err := d.GetVM(ctx, vm.HypervisorName())
		if err != nil {
			return DeployStepResult{}, fmt.Errorf("inspect %s: %w", vm.HypervisorName(), err)
		}
		state := stateOf(info.State)
		updates := map[string]any{"state": state, "last_error": "", "removed_at": nil}
		if id := a.hostID(ctx, vm.ClusterID, info.Host); id != "" {
			updates["host_id"] = id
		}
		if err := a.Store.DB.WithContext(ctx).Model(&models.SystemVM{}).Where("id = ?", vm.ID).Updates(updates).Error; err != nil {
			return DeployStepResult{}, fmt.Errorf("record %s: %w", vm.Name, err)
		}
		return DeployStepResult{State: state, Host: info.Host, Detail: vm.Name + " " + state + " on " + info.Host}, nil
	}
	return DeployStepResult{}, temporal.NewNonRetryableApplicationError("unknown deploy step "+string(step), ErrTypeNotAllowed, nil)
}

// verifyNew checks a new VM runs, answers `sysvm-agent version` over SSH along its access
// path with its template's version and, for a CPVM, that its console endpoint serves TLS. When
// a server certificate was uploaded, a new CPVM or SSVM is given it first (followCertificate)
// and verified serving it with a TLS handshake trusting only the uploaded root, then recorded
// as serving it. A VM that does not answer (yet) is a retryable NotServing error: the
// activity's retry policy bounds how long it may take to boot.
func (a *Activities) verifyNew(ctx context.Context, d hypervisors.Driver, vm *models.SystemVM, operationID string) (DeployStepResult, error) {
	info, err := d.GetVM(ctx, vm.HypervisorName())
	if err != nil {
		return DeployStepResult{}, fmt.Errorf("inspect %s: %w", vm.HypervisorName(), err)
	}
	if info.State != hypervisors.PowerRunning {
		return DeployStepResult{}, temporal.NewApplicationError(
			fmt.Sprintf("%s is %s, not running", vm.HypervisorName(), info.State), ErrTypeNotServing)
	}
	res := DeployStepResult{State: models.StateRunning, Host: info.Host, Detail: "running"}
	if a.Exec == nil {
		res.Detail = "running (no SSH executor configured: not checked over SSH)"
		return res, nil
	}
	t, err := StoreTargets{Store: a.Store}.TargetFor(ctx, *vm)
	if err != nil {
		return DeployStepResult{}, temporal.NewNonRetryableApplicationError(err.Error(), ErrTypeNotAllowed, err)
	}
	rctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	out, err := a.Exec.Run(rctx, t, []string{"timeout", "15", DefaultAgentCommand, "version"}, nil)
	if err != nil {
		return DeployStepResult{}, temporal.NewApplicationError(
			fmt.Sprintf("%s does not answer over SSH on port %d: %v", vm.Name, sshexec.DefaultPort, err), ErrTypeNotServing)
	}
	if out.ExitCode != 0 {
		return DeployStepResult{}, temporal.NewApplicationError(
			fmt.Sprintf("%s: %s version exited %d: %s", vm.Name, DefaultAgentCommand, out.ExitCode, strings.TrimSpace(string(out.Stderr))), ErrTypeNotServing)
	}
	var v agent.VersionInfo
	if err := json.Unmarshal(out.Stdout, &v); err != nil {
		return DeployStepResult{}, temporal.NewApplicationError(fmt.Sprintf("%s: unreadable version output: %v", vm.Name, err), ErrTypeNotServing)
	}
	if vm.Version != "" && !strings.Contains(v.TemplateVersion, vm.Version) {
		return DeployStepResult{}, temporal.NewNonRetryableApplicationError(
			fmt.Sprintf("%s runs template %q, want version %s", vm.Name, v.TemplateVersion, vm.Version), ErrTypeNotServing, nil)
	}
	res.Detail = fmt.Sprintf("answers over SSH: agent %s, template %s", v.AgentVersion, v.TemplateVersion)
	cert, err := a.followedCertificate(ctx, vm)
	if err != nil {
		return DeployStepResult{}, err
	}
	if cert != nil {
		addr, err := a.followCertificate(ctx, *vm, t, cert)
		if err != nil {
			return DeployStepResult{}, err
		}
		if err := a.Store.SetServedCertificate(ctx, vm.ID, cert.ID, operationID); err != nil {
			return DeployStepResult{}, fmt.Errorf("record %s serving %s: %w", vm.Name, cert.Name, err)
		}
		if vm.Type == models.TypeCPVM {
			res.ConsoleAddr = addr
		}
		res.Detail += fmt.Sprintf("; serves %s v%d at %s", cert.Name, cert.Version, addr)
		return res, nil
	}
	if vm.Type != models.TypeCPVM {
		return res, nil
	}
	st, err := a.consoleStatus(ctx, *vm)
	if err != nil {
		return DeployStepResult{}, temporal.NewApplicationError(fmt.Sprintf("console endpoint of %s: %v", vm.Name, err), ErrTypeNotServing)
	}
	addr := consoleAddr(*vm, st)
	dctx, dcancel := context.WithTimeout(ctx, 10*time.Second)
	defer dcancel()
	// Any certificate will do here (the dev default until one is rotated in): what is checked
	// is that the endpoint completes a TLS handshake and presents one.
	dialer := &tls.Dialer{NetDialer: &net.Dialer{}, Config: &tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS12}} //nolint:gosec // see above
	conn, err := dialer.DialContext(dctx, "tcp", addr)
	if err != nil {
		return DeployStepResult{}, temporal.NewApplicationError(fmt.Sprintf("console endpoint of %s at %s does not serve TLS: %v", vm.Name, addr, err), ErrTypeNotServing)
	}
	defer conn.Close()
	if len(conn.(*tls.Conn).ConnectionState().PeerCertificates) == 0 {
		return DeployStepResult{}, temporal.NewApplicationError(fmt.Sprintf("console endpoint of %s at %s presents no certificate", vm.Name, addr), ErrTypeNotServing)
	}
	res.ConsoleAddr = addr
	res.Detail += "; console serves TLS at " + addr
	return res, nil
}

// discardDeploy destroys what a failed or canceled deploy built: the VM on its hypervisor (a
// missing one is fine) and the row, which ends Destroyed once the hypervisor confirms the VM is
// gone. An unreachable hypervisor is a retryable error; the workflow's settle step then writes
// Error with the reason. Nothing allocated (no journal entry) is nothing to discard.
func (a *Activities) discardDeploy(ctx context.Context, in DeployStepInput) (DeployStepResult, error) {
	detail, done, err := a.stepDetail(ctx, in.OperationID, deployJournalKey(StepAllocate))
	if err != nil {
		return DeployStepResult{}, err
	}
	if !done {
		return DeployStepResult{Detail: "nothing allocated"}, nil
	}
	var p DeployPlan
	if err := json.Unmarshal([]byte(detail), &p); err != nil {
		return DeployStepResult{}, fmt.Errorf("journaled deploy plan of %s: %w", in.OperationID, err)
	}
	var vm models.SystemVM
	if err := a.Store.Get(ctx, &vm, p.VMID); err != nil {
		if errors.Is(err, models.ErrNotFound) {
			return DeployStepResult{Detail: "row gone"}, nil
		}
		return DeployStepResult{}, err
	}
	if vm.State == models.StateDestroyed {
		return DeployStepResult{State: vm.State, Detail: "already destroyed"}, nil
	}
	var res DeployStepResult
	err = heartbeatWhile(ctx, string(in.Step), func() error {
		d, err := a.driverFor(ctx, vm.ClusterID)
		if err != nil {
			return err
		}
		derr := d.DestroyVM(ctx, vm.HypervisorName())
		if derr != nil && !errors.Is(derr, hypervisors.ErrNotFound) {
			return fmt.Errorf("destroy %s: %w", vm.HypervisorName(), derr)
		}
		if _, gerr := d.GetVM(ctx, vm.HypervisorName()); !errors.Is(gerr, hypervisors.ErrNotFound) {
			return fmt.Errorf("%s still on its hypervisor after its destroy (%v)", vm.HypervisorName(), gerr)
		}
		res.Detail = "destroyed " + vm.HypervisorName()
		if errors.Is(derr, hypervisors.ErrNotFound) {
			res.Detail = vm.HypervisorName() + " was never created"
		}
		return nil
	})
	if err != nil {
		return DeployStepResult{}, err
	}
	reason := in.Reason
	if len(reason) > 2000 {
		reason = reason[:2000]
	}
	now := time.Now().UTC()
	if err := a.Store.DB.WithContext(ctx).Model(&models.SystemVM{}).Where("id = ?", vm.ID).Updates(map[string]any{
		"state": models.StateDestroyed, "removed_at": &now, "last_error": "deploy failed: " + reason}).Error; err != nil {
		return DeployStepResult{}, fmt.Errorf("record discard of %s: %w", vm.Name, err)
	}
	_ = a.Store.Secrets.ForgetHostKey(ctx, "vm:"+vm.Name)
	res.State = models.StateDestroyed
	return res, a.markStep(ctx, in.OperationID, deployJournalKey(StepDeployDiscard), res.Detail)
}
