package llm_test

import (
	"context"
	"fmt"
	"os"

	"github.com/tmc/langchaingo/llms"

	"github.com/flowsrun/flows/examples/llm"
)

func ExampleFromEnv() {
	// A program passes os.Getenv; here the environment has no key.
	env := map[string]string{}
	model, info, err := llm.FromEnv(func(k string) string { return env[k] })
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return
	}
	fmt.Println(info.Label)

	poem, err := llms.GenerateFromSinglePrompt(context.Background(), model, "Write a short poem about the sea.")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return
	}
	fmt.Println(poem)
	// Output:
	// offline model (scripted, no network)
	// The sea at the edge of the day,
	// where the loud hours fall away:
	// hold it gently, let it be,
	// small and bright and free.
}
