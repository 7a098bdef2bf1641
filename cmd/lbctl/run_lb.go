package main

import (
	"context"

	"github.com/lbctl/lbctl/lb"
	"github.com/lbctl/lbctl/metrics"
)

// addLoadBalancer sets up the load-balancer side of lbctl run (package lb)
// when the config renders anything: nginx's first-render gate is then opened
// by it, and the load balancer is deregistered before any program is stopped.
func (o *runOptions) addLoadBalancer() error {
	if !lb.Needed(o.cfg) {
		return nil
	}
	l, err := lb.New(o.cfg, lb.Options{Log: o.log, Metrics: metrics.New(o.registry), Supervisor: o.sup})
	if err != nil {
		return err
	}
	o.lb = l
	o.openGates = append(o.openGates, lb.FirstRenderGate)
	o.beforeStop = l.Deregister
	return nil
}

// startLoadBalancer runs the load balancer until ctx ends; an error (a first
// render that can never succeed, a part that failed) ends lbctl run through stop.
func (o *runOptions) startLoadBalancer(ctx context.Context, stop func(error)) {
	if o.lb == nil {
		return
	}
	go func() {
		if err := o.lb.Run(ctx); err != nil {
			stop(err)
		}
	}()
}

// health is /healthz: the load balancer's when there is one.
func (o *runOptions) health() func() error {
	if o.lb == nil {
		return nil
	}
	return o.lb.Healthy
}
