package shift

import (
	"context"
	"errors"
	"fmt"

	"github.com/hashicorp/consul/api"
)

// Errors for input a shift refuses before touching anything.
var (
	ErrUnknownService = errors.New("unknown service")
	ErrNoHealthy      = errors.New("no healthy instance")
	ErrBadPlan        = errors.New("bad shift plan")
)

// CheckPlan refuses a plan that cannot work: bad names or steps, a service
// Consul does not know, a From with no passing instance to fall back on, or
// a To that has no instance or any not passing.
func CheckPlan(ctx context.Context, client *api.Client, p Plan) error {
	if err := checkPlanShape(p); err != nil {
		return err
	}
	instances, _, err := client.Catalog().Service(p.Service, "", (&api.QueryOptions{}).WithContext(ctx))
	if err != nil {
		return fmt.Errorf("look up %s: %w", p.Service, err)
	}
	if len(instances) == 0 {
		return fmt.Errorf("%w %q: Consul has no instance of it", ErrUnknownService, p.Service)
	}
	total, failing, err := TagHealth(ctx, client, p.Service, p.From)
	if err != nil {
		return err
	}
	if total-len(failing) == 0 {
		return fmt.Errorf("%w of %s tagged %s (from): rolling back would have nowhere to go", ErrNoHealthy, p.Service, p.From)
	}
	total, failing, err = TagHealth(ctx, client, p.Service, p.To)
	if err != nil {
		return err
	}
	if total == 0 {
		return fmt.Errorf("%w of %s tagged %s (to): no instance carries that tag", ErrNoHealthy, p.Service, p.To)
	}
	if len(failing) > 0 {
		return fmt.Errorf("%w: %d of %d instances of %s tagged %s are not passing: %v", ErrNoHealthy, len(failing), total, p.Service, p.To, failing)
	}
	return nil
}

func checkPlanShape(p Plan) error {
	switch {
	case !ValidName(p.Service):
		return fmt.Errorf("%w: service %q is not a Consul service name", ErrBadPlan, p.Service)
	case !ValidName(p.From) || !ValidName(p.To):
		return fmt.Errorf("%w: --from %q and --to %q must be tags (letters, digits, '.', '_', '-')", ErrBadPlan, p.From, p.To)
	case p.From == p.To:
		return fmt.Errorf("%w: --from and --to are both %q", ErrBadPlan, p.From)
	case p.Interval <= 0:
		return fmt.Errorf("%w: --interval must be positive, got %s", ErrBadPlan, p.Interval)
	}
	if err := CheckSteps(p.Steps); err != nil {
		return fmt.Errorf("%w: %v", ErrBadPlan, err)
	}
	return nil
}
