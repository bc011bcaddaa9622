// Package deps pins modules in go.mod while packages that use them are being
// written. Removed once every dependency has a real importer.
package deps

import (
	_ "github.com/bojanz/currency"
	_ "github.com/cenkalti/backoff/v4"
	_ "github.com/santhosh-tekuri/jsonschema/v6"
	_ "go.uber.org/zap"
	_ "go.yaml.in/yaml/v3"
	_ "golang.org/x/time/rate"
)
