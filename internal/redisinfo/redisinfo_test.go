package redisinfo

import (
	"math"
	"testing"
)

// TestCPUSeconds reads INFO cpu's user and system seconds, and refuses a
// section that lacks one of them or holds a number it cannot read.
func TestCPUSeconds(t *testing.T) {
	cpu := map[string]string{"used_cpu_sys": "4.601528", "used_cpu_user": "53.583076",
		"used_cpu_sys_children": "0.000000", "used_cpu_user_children": "0.000000"}
	got, ok := cpuSeconds(cpu)
	if !ok || math.Abs(got-58.184604) > 1e-9 {
		t.Errorf("cpuSeconds = %v, %v; want 58.184604, true", got, ok)
	}
	for _, bad := range []map[string]string{{"used_cpu_sys": "1.0"}, {"used_cpu_sys": "x", "used_cpu_user": "1"}, nil} {
		if v, ok := cpuSeconds(bad); ok {
			t.Errorf("cpuSeconds(%v) = %v, true; want false", bad, v)
		}
	}
}
