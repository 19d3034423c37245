// Renders an Ollama chat template with Go's text/template (what Ollama uses) for the messages in a JSON file:
//   go run main.go case.json   ->  prints the rendered prompt
package main

import (
	"encoding/json"
	"os"
	"text/template"
)

type message struct {
	Role    string `json:"role"`
	Content string `json:"content"`
}

func main() {
	data, err := os.ReadFile(os.Args[1])
	if err != nil {
		panic(err)
	}
	var c struct {
		Template string    `json:"template"`
		Messages []message `json:"messages"`
	}
	if err := json.Unmarshal(data, &c); err != nil {
		panic(err)
	}
	t := template.Must(template.New("ollama").Parse(c.Template))
	if err := t.Execute(os.Stdout, map[string]any{"Messages": c.Messages}); err != nil {
		panic(err)
	}
}
