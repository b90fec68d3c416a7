"""The console's screenshots and the demo scenes they share with the snapshot tests."""
