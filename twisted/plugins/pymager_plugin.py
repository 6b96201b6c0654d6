from twisted.application.service import ServiceMaker

pymager = ServiceMaker("pymager", "pymager_tx.process.tap", "Image storage and resizing over HTTP", "pymager")
