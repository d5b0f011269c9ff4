package flows_test

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/flowsrun/flows/examples/flows"
	"github.com/flowsrun/flows/registry"
)

func TestRegisterListsBothFlowsAsOffline(t *testing.T) {
	reg := registry.New()
	require.NoError(t, flows.Register(reg))

	infos := reg.List()
	require.Len(t, infos, 2)
	byName := map[string]registry.Info{}
	for _, info := range infos {
		byName[info.Name] = info
		assert.NotEmpty(t, info.Description, info.Name)
		assert.Equal(t, flows.ModelLabel, info.Labels["model"], info.Name)
	}

	poem, ok := byName[flows.PoemFlowName]
	require.True(t, ok)
	assert.Empty(t, poem.Schema.Properties, "poem_flow takes no inputs")

	search, ok := byName[flows.WebSearchFlowName]
	require.True(t, ok)
	assert.Equal(t, []string{"question"}, search.Schema.Required)
	assert.Equal(t, []string{"question"}, search.Schema.Order)
	require.Contains(t, search.Schema.Properties, "question")
	assert.Equal(t, "string", search.Schema.Properties["question"].Type)
	assert.NotEmpty(t, search.Schema.Properties["question"].Description)
}

func TestRegisterTwiceFails(t *testing.T) {
	reg := registry.New()
	require.NoError(t, flows.Register(reg))
	assert.ErrorIs(t, flows.Register(reg), registry.ErrDuplicate)
}
