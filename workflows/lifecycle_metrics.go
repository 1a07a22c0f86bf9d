package workflows

import (
	"time"

	"go.temporal.io/sdk/workflow"
)

// MetricRecreateSwitchGap is a timer a recreate records once its replacement serves: the gap
// from the old VM stopped to the replacement confirmed serving its addresses, tagged zone_id
// and type (exported by sysvm worker as the histogram sysvm_recreate_switch_gap_seconds).
// Through the workflow's metrics handler, so a replay records nothing and no command is added.
const MetricRecreateSwitchGap = "sysvm_recreate_switch_gap"

// recordSwitchGap records a recreate's switch gap.
func recordSwitchGap(ctx workflow.Context, zoneID, vmType string, gap time.Duration) {
	workflow.GetMetricsHandler(ctx).WithTags(map[string]string{"zone_id": zoneID, "type": vmType}).
		Timer(MetricRecreateSwitchGap).Record(gap)
}
