"""The shipped Tiled maps and the tools that author them (the server only reads the .tmj files)."""
