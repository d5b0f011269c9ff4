package flow_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/flowsrun/flows/flow"
	"github.com/flowsrun/flows/progress"
)

func TestFuncRun(t *testing.T) {
	rec := progress.NewRecorder()
	f := flow.Func(func(ctx context.Context, task *flow.Task) (any, error) {
		task.Progress.Log("running " + task.ID)
		return task.Attempt, nil
	})
	out, err := f.Run(context.Background(), &flow.Task{ID: "t1", Attempt: 3, Progress: rec})
	require.NoError(t, err)
	assert.Equal(t, 3, out)
	assert.Equal(t, "running t1", rec.Snapshot().Details.StepResults[0].Message)

	boom := errors.New("boom")
	_, err = flow.Func(func(context.Context, *flow.Task) (any, error) { return nil, boom }).Run(context.Background(), &flow.Task{})
	assert.ErrorIs(t, err, boom)
}

// plainFlow implements only Flow.
type plainFlow struct{}

func (plainFlow) Run(context.Context, *flow.Task) (any, error) { return nil, nil }

// upperValidator normalizes its inputs its own way.
type upperValidator struct{ plainFlow }

func (upperValidator) Validate(inputs json.RawMessage) (json.RawMessage, error) {
	if string(inputs) == `"bad"` {
		return nil, &flow.InputError{Reason: "bad"}
	}
	return json.RawMessage(`{"validated":true}`), nil
}

func TestValidate(t *testing.T) {
	anyObject := []struct {
		name string
		f    flow.Flow
	}{
		{"Func", flow.Func(func(context.Context, *flow.Task) (any, error) { return nil, nil })},
		{"flow without a validator", plainFlow{}},
	}
	inputs := []struct {
		in      string
		want    string
		wantErr bool
	}{
		{in: ``, want: `{}`},
		{in: `null`, want: `{}`},
		{in: ` {"anything": [1, {"goes": true}]} `, want: `{"anything": [1, {"goes": true}]}`},
		{in: `[]`, wantErr: true},
		{in: `"text"`, wantErr: true},
		{in: `true`, wantErr: true},
		{in: `{"open":`, wantErr: true},
		{in: `{} {}`, wantErr: true},
		{in: `{"a":1,"a":2}`, wantErr: true},
		{in: `{"a":[{"b":1,"b":1}]}`, wantErr: true},
		{in: `{"a":1,"A":2}`, want: `{"a":1,"A":2}`},
	}
	for _, f := range anyObject {
		for _, tt := range inputs {
			t.Run(fmt.Sprintf("%s %q", f.name, tt.in), func(t *testing.T) {
				out, err := flow.Validate(f.f, json.RawMessage(tt.in))
				if tt.wantErr {
					assert.ErrorIs(t, err, flow.ErrInvalidInputs)
					assert.Nil(t, out)
					return
				}
				require.NoError(t, err)
				assert.Equal(t, tt.want, string(out))
			})
		}
	}

	t.Run("a flow's own validator is used", func(t *testing.T) {
		out, err := flow.Validate(upperValidator{}, json.RawMessage(`[]`))
		require.NoError(t, err)
		assert.JSONEq(t, `{"validated":true}`, string(out))
		_, err = flow.Validate(upperValidator{}, json.RawMessage(`"bad"`))
		assert.ErrorIs(t, err, flow.ErrInvalidInputs)
	})

	t.Run("duplicate keys are refused before a flow's own validator", func(t *testing.T) {
		out, err := flow.Validate(upperValidator{}, json.RawMessage(`{"x":{"y":1,"y":2}}`))
		assert.Nil(t, out)
		var ie *flow.InputError
		require.ErrorAs(t, err, &ie)
		assert.Equal(t, "x.y", ie.Field)
		assert.EqualError(t, err, `invalid inputs: field "x.y": is given twice`)
	})
}
