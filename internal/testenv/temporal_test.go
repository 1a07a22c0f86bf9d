package testenv

import (
	"context"
	"testing"

	"go.temporal.io/api/operatorservice/v1"
)

func TestTemporalDevServerHasSearchAttributes(t *testing.T) {
	srv := TemporalT(t, false)
	c, err := srv.Client()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	resp, err := c.OperatorService().ListSearchAttributes(context.Background(),
		&operatorservice.ListSearchAttributesRequest{Namespace: srv.Namespace})
	if err != nil {
		t.Fatal(err)
	}
	for _, sa := range SearchAttributes {
		if _, ok := resp.CustomAttributes[sa]; !ok {
			t.Errorf("search attribute %s not registered: %v", sa, resp.CustomAttributes)
		}
	}
}
