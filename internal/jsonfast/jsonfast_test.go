package jsonfast

import (
	"strings"
	"testing"
)

// TestAgreeDepth: nesting beyond fastjson's parser's limit is left to
// encoding/json before fastjson's validator (which has none) recurses
// into it; nesting within it is not.
func TestAgreeDepth(t *testing.T) {
	nest := func(n int) string { return strings.Repeat("[", n) + strings.Repeat("]", n) }
	if !Agree(nest(maxDepth)) || !Agree([]byte(`{"a":[{"b":"[[[["}]}`)) {
		t.Errorf("Agree refuses nesting of %d, or brackets in a string", maxDepth)
	}
	if Agree(nest(maxDepth+1)) || Agree([]byte(nest(1_000_000))) {
		t.Errorf("Agree accepts nesting deeper than %d", maxDepth)
	}
}
